"""The engine a simulation runs on when the caller names none, and why (the run's first line).

Clients that train with an ML framework (torch, Keras, TensorFlow, JAX) spend seconds per call,
and a pool of worker processes runs them side by side on the machine's cores; each worker pays
for importing the framework once (seconds) and keeps it. Clients that use none (NumPy, the
standard library) finish in milliseconds, and no pool pays for itself: they run in this process.
So the process engine is the default when client_fn uses a framework, there are at least two
cores, and the run makes enough client calls (`MIN_CALLS_FOR_WORKERS`) to earn back the workers'
start; otherwise the sequential engine is. Both give the same model for the same seed.

Which frameworks client_fn uses is read from what it would send to a worker: the modules its
pickle names (its own module and those of the functions, classes and modules it refers to), and
the framework modules those modules hold at top level (`import keras` in the module that defines
the model, say).
"""

from __future__ import annotations

import os
import pickletools
import sys
from dataclasses import dataclass
from types import ModuleType

from roost.client.client import ClientFn

FRAMEWORKS = ("torch", "keras", "tensorflow", "jax")
"""The frameworks whose clients train for long enough that worker processes pay off."""

MIN_CALLS_FOR_WORKERS = 12
"""Client calls (rounds × clients) below which workers cost more than they save: starting a
worker imports the framework (about 5 s), and a framework client's call takes about a second."""


@dataclass(frozen=True)
class EngineChoice:
    """The default engine for a run and the reason, said on the run's first line."""

    engine: str
    why: str
    options: dict

    def line(self) -> str:
        """The run's first line: the engine and why."""
        return f"engine: {self.engine} ({self.why})"


def default_engine(client_fn: ClientFn, num_clients: int, num_rounds: int) -> EngineChoice:
    """The engine to run `client_fn`'s `num_clients` clients for `num_rounds` rounds on."""
    keep = "engine='process' runs them in worker processes"
    framework = framework_of(client_fn)
    if framework is None:
        why = (
            f"the default: client_fn uses no ML framework, so its clients run fastest here; {keep}"
        )
        return EngineChoice("sequential", why, {})
    cores = os.cpu_count() or 1
    workers = min(cores, num_clients)
    calls = num_rounds * num_clients
    if workers < 2:
        why = f"the default: client_fn uses {framework}, but {_one_core(cores, num_clients)}"
        return EngineChoice("sequential", why, {})
    if calls < MIN_CALLS_FOR_WORKERS:
        why = (
            f"the default: client_fn uses {framework}, but {calls} client calls do not earn back "
            f"starting workers that import it; {keep}"
        )
        return EngineChoice("sequential", why, {})
    why = (
        f"the default: client_fn uses {framework}, so {workers} worker processes import it once "
        f"and run {calls} client calls side by side on {cores} cores; engine='sequential' runs "
        "them one by one in this process"
    )
    return EngineChoice("process", why, {"max_workers": workers})


def _one_core(cores: int, num_clients: int) -> str:
    return "this machine has one core" if cores < 2 else "there is one client"


def framework_of(client_fn: ClientFn) -> str | None:
    """The first of `FRAMEWORKS` that client_fn uses, or None (also when it cannot be pickled,
    and so cannot run in a worker anyway)."""
    try:
        import cloudpickle

        payload = cloudpickle.dumps(client_fn)
    except Exception:
        return None
    used: set[str] = set()
    for name in _module_names(payload):
        used.add(name.partition(".")[0])
        module = sys.modules.get(name)
        if module is not None:
            used.update(_frameworks_held(module))
    return next((framework for framework in FRAMEWORKS if framework in used), None)


def _module_names(payload: bytes) -> set[str]:
    """The names of loaded modules among the strings of a pickle (module names travel as
    strings, for references by name and for cloudpickle's module imports alike)."""
    names = set()
    try:
        for _opcode, argument, _ in pickletools.genops(payload):
            if isinstance(argument, str):
                for word in argument.split(" "):  # GLOBAL's argument is "module name"
                    if word in sys.modules:
                        names.add(word)
    except Exception:  # a pickle pickletools cannot walk: judge by what was read
        pass
    return names


def _frameworks_held(module: ModuleType) -> set[str]:
    """The top-level packages of the modules, classes and functions `module` holds as globals."""
    held = set()
    for value in list(vars(module).values()):
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        if isinstance(name, str):
            held.add(name.partition(".")[0])
    return held.intersection(FRAMEWORKS)


__all__ = ["FRAMEWORKS", "MIN_CALLS_FOR_WORKERS", "EngineChoice", "default_engine", "framework_of"]
