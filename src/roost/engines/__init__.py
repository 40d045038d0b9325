"""Simulation engines: how simulated clients run on this machine, chosen by name.

An engine is a `roost.transport.base.Transport` (the round loop hands it whole cohorts), built by
`make_engine(name, client_fn, num_clients, ...)` from this registry:

- `sequential`: clients one by one, in this process: the reference.
- `process`: a pool of worker processes (all cores), for any picklable `client_fn`; the
  workers run roost's own entry point (`roost.engines.worker`), never the user's script.
- `ray`: a pool of Ray actors, for simulations that outgrow one machine.
- `vectorized`: a `roost.Task`'s whole cohort as one batched computation (PyTorch).

Each engine's module is imported only when the engine is made, so optional dependencies (torch,
Ray) are needed only by the engine that uses them. Which engine a run that names none gets, and
why, is `roost.engines.choice`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.client.client import ClientFn
from roost.core.types import Config
from roost.errors import ConfigurationError, other_engines
from roost.transport.base import Transport


@dataclass(frozen=True)
class EngineEntry:
    """How to build one engine.

    Attributes:
        factory: a callable `(client_fn, num_clients, run_config, **options) -> Transport`, or
            its "module:attribute" name, imported only when the engine is made.
        options: the option names the engine accepts.
        check: called with `client_fn` before the factory is imported; raises
            `ConfigurationError` for what the engine cannot run.
    """

    factory: str | Callable[..., Transport]
    options: tuple[str, ...] = ()
    check: Callable[[ClientFn], None] | None = None


def torch_available() -> bool:
    """Whether torch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def _require_task(client_fn: ClientFn) -> None:
    from roost.tasks.task import Task

    if not isinstance(client_fn, Task):
        raise ConfigurationError(
            "the vectorized engine trains a roost Task (model + loss + optimizer recipe + "
            f"per-client data), got a {type(client_fn).__name__} as client_fn; pass a Task, "
            f"or use {other_engines('sequential', 'process', 'ray')} for an arbitrary client_fn"
        )
    if not torch_available():
        raise ConfigurationError("the vectorized engine needs torch: pip install torch")


_REGISTRY: dict[str, EngineEntry] = {
    "sequential": EngineEntry("roost.engines.sequential:SequentialEngine", ("warm_clients",)),
    "process": EngineEntry(
        "roost.engines.process:ProcessEngine",
        ("max_workers", "threads_per_worker", "start_method", "warm_clients", "in_order"),
    ),
    "ray": EngineEntry(
        "roost.engines.ray:RayEngine",
        (
            "address",
            "num_cpus_per_client",
            "num_gpus_per_client",
            "max_actors",
            "init_kwargs",
            "warm_clients",
            "in_order",
        ),
    ),
    "vectorized": EngineEntry(
        "roost.engines.vectorized:VectorizedEngine",
        ("device", "chunk_size", "memory_budget", "cache_data"),
        check=_require_task,
    ),
}

ENGINES: tuple[str, ...] = tuple(_REGISTRY)
"""The names of the built-in engines, `sequential`, `process`, `ray` and `vectorized`
(`register_engine` adds others)."""


def register_engine(name: str, entry: EngineEntry) -> None:
    """Make `make_engine(name, ...)` build the engine `entry` describes.

    Raises `ConfigurationError` if `name` is taken: engines are not replaced silently.
    """
    if name in _REGISTRY:
        raise ConfigurationError(f"an engine named {name!r} is already registered")
    _REGISTRY[name] = entry


def make_engine(
    engine: str,
    client_fn: ClientFn,
    num_clients: int,
    *,
    run_config: Config | None = None,
    **options: Any,
) -> Transport:
    """The engine named `engine`, for a simulation of `num_clients` clients.

    Args:
        engine: "sequential", "process", "ray", "vectorized" or a registered name.
        client_fn: builds a client per context; for "vectorized" it must be a `roost.Task`.
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client built by `client_fn` in `context.run_config`.
        options: engine settings: `warm_clients` (sequential, process, ray: keep the clients
            `client_fn` builds, see `roost.engines.warm.WarmClients`); `in_order` (process,
            ray: results reach the aggregator in the cohort's order, default True); `max_workers`,
            `threads_per_worker`, `start_method` (process); `address`, `num_cpus_per_client`,
            `num_gpus_per_client`, `max_actors`, `init_kwargs` (ray); `device`, `chunk_size`,
            `memory_budget`, `cache_data` (vectorized).
    """
    entry = _REGISTRY.get(engine)
    if entry is None:
        raise ConfigurationError(f"unknown engine {engine!r}; choose one of {', '.join(_REGISTRY)}")
    _check_options(engine, options, entry.options)
    if entry.check is not None:
        entry.check(client_fn)
    factory = entry.factory
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory(client_fn, num_clients, run_config, **options)


def _check_options(engine: str, options: dict[str, Any], names: tuple[str, ...]) -> None:
    if not options:
        return
    if not names:
        raise ConfigurationError(
            f"the {engine} engine takes no options, got {', '.join(sorted(options))}"
        )
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} for the {engine} engine; "
            f"it accepts {', '.join(names)}"
        )


__all__ = [
    "ENGINES",
    "EngineEntry",
    "make_engine",
    "register_engine",
    "torch_available",
]
