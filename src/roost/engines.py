"""Choosing a simulation engine by name. Every engine is a transport behind the same round loop.

- `sequential`: clients one by one, in this process: the reference.
- `process`: a pool of worker processes (all cores), for any picklable `client_fn`.
- `ray`: a pool of Ray actors, for simulations that outgrow one machine.
- `vectorized`: a `roost.Task`'s whole cohort as one batched computation (PyTorch).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from roost.client.client import ClientFn
from roost.core.types import Config
from roost.errors import ConfigurationError
from roost.transport.base import Transport

ENGINES = ("sequential", "process", "ray", "vectorized")


def torch_available() -> bool:
    """Whether torch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def make_transport(
    engine: str,
    client_fn: ClientFn,
    num_clients: int,
    *,
    run_config: Config | None = None,
    **options: Any,
) -> Transport:
    """The transport of engine `engine` for a simulation of `num_clients` clients.

    Args:
        engine: "sequential", "process", "ray" or "vectorized".
        client_fn: builds a client per context; for "vectorized" it must be a `roost.Task`.
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client built by `client_fn` in `context.run_config`.
        options: engine settings: `max_workers`, `threads_per_worker` (process); `address`,
            `num_cpus_per_client`, `num_gpus_per_client`, `max_actors`, `init_kwargs` (ray);
            `device`, `chunk_size`, `memory_budget`, `cache_data` (vectorized).
    """
    if engine == "sequential":
        from roost.transport.inprocess import InProcessTransport

        _no_options(engine, options)
        return InProcessTransport(client_fn, num_clients, run_config=run_config)
    if engine == "process":
        from roost.transport.process import ProcessTransport

        return ProcessTransport(client_fn, num_clients, run_config, **_known(engine, options, (
            "max_workers", "threads_per_worker", "start_method")))
    if engine == "ray":
        from roost.transport.ray import RayTransport

        return RayTransport(client_fn, num_clients, run_config, **_known(engine, options, (
            "address", "num_cpus_per_client", "num_gpus_per_client", "max_actors",
            "init_kwargs")))
    if engine == "vectorized":
        from roost.tasks.recipe import Task

        if not isinstance(client_fn, Task):
            raise ConfigurationError(
                "the vectorized engine trains a roost Task (model + loss + optimizer recipe + "
                f"per-client data), got a {type(client_fn).__name__} as client_fn; pass a Task, "
                "or use engine='sequential', 'process' or 'ray' for an arbitrary client_fn"
            )
        if not torch_available():
            raise ConfigurationError("the vectorized engine needs torch: pip install torch")
        from roost.transport.vectorized import VectorizedTransport

        return VectorizedTransport(client_fn, num_clients, **_known(engine, options, (
            "device", "chunk_size", "memory_budget", "cache_data")))
    raise ConfigurationError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def _no_options(engine: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigurationError(
            f"the {engine} engine takes no options, got {', '.join(sorted(options))}"
        )


def _known(engine: str, options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} for the {engine} engine; "
            f"it accepts {', '.join(names)}"
        )
    return options
