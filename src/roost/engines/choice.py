"""The engine a simulation runs on when the caller names none, and why (the run's first line).

Worker processes pay off where a client's call is mostly serial work that one process cannot
spread over the cores. Keras on TensorFlow or JAX is that case: each model `client_fn` builds
traces and compiles its training step again (a second or more of one core per call), so a pool
of workers, each keeping the framework imported, runs such clients side by side. A torch call
already spreads its arithmetic over every core, and NumPy clients finish in milliseconds: in one
process they ran as fast or faster (docs/how-to/speed.md), with no worker to start (a
worker's first act is to import the framework, about 5 s). So the process engine is the default
when client_fn uses TensorFlow, JAX, or Keras on either, the machine has two cores or more and
at least one of them idle (fewer than cores - 1 busy, by the lesser of the one-minute load
average and the cores' use over a fifth of a second: on a two-core machine kept busy by other
work, workers took longer than one process, as they wait for the same cores),
and the run makes enough client calls (`MIN_CALLS_FOR_WORKERS`) to earn back the workers' start;
otherwise the sequential engine is. Since the choice can depend on the machine's load, pass
`engine=` to pin it; on a pinned engine a seed gives the same run every time.

Which frameworks client_fn uses is read from what it would send to a worker: the modules its
pickle names (its own module and those of the functions, classes and modules it refers to), and
the framework modules those modules hold at top level (`import keras` in the module that defines
the model, say).
"""

from __future__ import annotations

import os
import pickletools
import sys
import time
from dataclasses import dataclass
from types import ModuleType

from roost.client.client import ClientFn

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
"""The ML frameworks looked for in client_fn, Keras first (its backend is one of the others)."""

TRACING = ("tensorflow", "jax")
"""Frameworks (or Keras backends) that trace and compile every new model's step: serial work
per call that worker processes run side by side."""

LOAD_SAMPLE_SECONDS = 0.2
"""How long the cores' use is watched, when it matters, to tell whether they are busy now."""

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
    found = framework_of(client_fn)
    framework = _with_backend(found)
    if found is None:
        why = (
            f"the default: client_fn uses no ML framework, so its clients run fastest here; {keep}"
        )
        return EngineChoice("sequential", why, {})
    if not framework.endswith(TRACING):
        why = (
            f"the default: client_fn uses {framework}, whose calls already spread over the "
            f"cores, so its clients run fastest here; {keep}"
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
    load = _load(cores)
    if load >= cores - 1:
        why = (
            f"the default: client_fn uses {framework}, but this machine's {cores} cores are busy "
            f"(load {load:.1f}), and workers would wait for them; {keep}"
        )
        return EngineChoice("sequential", why, {})
    why = (
        f"the default: client_fn uses {framework}, so {workers} worker processes import it once "
        f"and run {calls} client calls side by side on {cores} cores; --engine sequential "
        "(engine='sequential') runs them one by one in this process"
    )
    return EngineChoice("process", why, {"max_workers": workers})


def _with_backend(framework: str | None) -> str:
    """`framework`, and for Keras the backend it runs on ("keras on tensorflow")."""
    keras = sys.modules.get("keras") if framework == "keras" else None
    try:
        backend = keras.backend.backend() if keras is not None else None
    except Exception:  # a Keras without the usual API: judge it as Keras alone
        backend = None
    return f"keras on {backend}" if backend else str(framework)


def _load(cores: int) -> float:
    """How many of the machine's cores are busy: the lesser of the load average over the last
    minute and the cores busy just now (`LOAD_SAMPLE_SECONDS`, where the system says; 0 where
    neither is known). The average alone lags: for a minute after other work ends (a previous
    run, say) it still reads busy, and workers that would have been faster were not chosen."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        average = 0.0
    now = _busy_cores_now(cores)
    return average if now is None else min(average, now)


def _busy_cores_now(cores: int) -> float | None:
    """The cores busy over the next `LOAD_SAMPLE_SECONDS`, from the kernel's CPU time counters
    (Linux's /proc/stat); None where they cannot be read."""
    try:
        before = _cpu_times()
        time.sleep(LOAD_SAMPLE_SECONDS)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    spent = [later - earlier for later, earlier in zip(after, before, strict=True)]
    total = sum(spent)
    if total <= 0:
        return None
    idle = spent[3] + spent[4]  # idle, and waiting for I/O
    return cores * (1 - idle / total)


def _cpu_times() -> list[int]:
    """The whole machine's CPU time so far, in ticks: user, nice, system, idle, iowait, irq,
    softirq, steal (guest time is counted within user and nice already)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    if fields[0] != "cpu":
        raise ValueError("no cpu line")
    return [int(value) for value in fields[1:9]]


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
