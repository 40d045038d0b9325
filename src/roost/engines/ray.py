"""The Ray engine: the worker pool of `roost.engines.pool`, its workers Ray actors on a cluster.

Each actor receives `client_fn` once and then builds and runs one client per call, exactly as the
sequential engine does; with `warm_clients`, each actor keeps the clients it built and the pool
sends a node back to the actor that holds its client (see `roost.engines.pool`).

`address` connects to an existing cluster (`ray.init(address=...)`); without one, and when Ray is
not already initialized, a local Ray instance is started and shut down by `close()`. A client
past `round_timeout` is a failure and its actor is replaced; so is a client whose actor dies.
Requires Ray (`pip install "roost[ray]"`).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from functools import cache
from typing import Any

from roost.client.client import ClientFn
from roost.core.types import ClientId, Config, Failure, Instruction, Result
from roost.engines.federation import Federation
from roost.engines.pool import WORKER_START_TIMEOUT, WorkerLost, WorkerPool, serialize_federation
from roost.engines.warm import ClientHost, NodeState, WarmClients, warm_setting
from roost.errors import ConfigurationError

log = logging.getLogger(__name__)


class _ClientActor:
    """Holds the rebuilt client_fn (and, warm, the clients it built); runs one instruction per
    call."""

    def __init__(self, payload: bytes, warm: WarmClients | None) -> None:
        self.host = ClientHost(pickle.loads(payload), warm)

    def ready(self) -> bool:
        return True

    def run(
        self, client_id: ClientId, instruction: Instruction, state: NodeState, ticket: int
    ) -> tuple[Result | Failure, NodeState]:
        return self.host.run(client_id, instruction, state, ticket)


@cache
def _actor_class(ray: Any, num_cpus: float, num_gpus: float) -> Any:
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_ClientActor)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ConfigurationError(
            "the ray engine needs Ray: pip install 'roost[ray]' (or use engine='process')"
        ) from error
    return ray


class RayEngine(WorkerPool[Any, Any]):
    """Run clients on a pool of Ray actors, reused every round.

    Args:
        client_fn: builds a client for a `Context`; must be picklable (Ray uses cloudpickle).
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client in `context.run_config`.
        address: a Ray cluster to connect to (e.g. "auto" or "ray://head:10001"); None starts a
            local Ray unless this process already called `ray.init`.
        num_cpus_per_client / num_gpus_per_client: resources each actor reserves.
        max_actors: actors in the pool (default: cluster CPUs / num_cpus_per_client).
        init_kwargs: extra arguments for `ray.init` (e.g. `{"num_cpus": 4}`).
        warm_clients: keep the clients each actor builds (True, or `WarmClients(...)` bounds,
            split among the actors); see `roost.engines.warm` for how that can change the
            results of clients that keep state. Default False: a fresh client per instruction.
        in_order: results reach the aggregator in the cohort's order (default: a seed gives
            the same bits), or, False, as they finish; see `ProcessEngine` for the trade-off.
    """

    engine_name = "ray"

    def __init__(
        self,
        client_fn: ClientFn,
        num_clients: int,
        run_config: Config | None = None,
        *,
        address: str | None = None,
        num_cpus_per_client: float = 1.0,
        num_gpus_per_client: float = 0.0,
        max_actors: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        warm_clients: bool | WarmClients = False,
        in_order: bool = True,
    ) -> None:
        if not num_cpus_per_client > 0:
            raise ConfigurationError(f"num_cpus_per_client must be > 0, got {num_cpus_per_client}")
        if max_actors is not None and max_actors < 1:
            raise ConfigurationError(f"max_actors must be >= 1, got {max_actors}")
        federation = Federation.of(client_fn, num_clients, run_config)  # checked before Ray starts
        warm = warm_setting(warm_clients)
        self._ray = ray = _import_ray()
        payload = serialize_federation(federation, "ray")
        self._owns_ray = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING}
            options.update(init_kwargs or {})
            ray.init(address=address, **options)
            self._owns_ray = True
        elif address is not None:
            log.info("Ray is already initialized in this process; address=%r is not used", address)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actors = max_actors or max(1, int(cpus // num_cpus_per_client))
        super().__init__(federation, actors, warm, in_order=in_order)
        self._actor_warm = None if warm is None else warm.share(actors)
        self._actor_class = _actor_class(
            ray, float(num_cpus_per_client), float(num_gpus_per_client)
        )
        self._payload_ref = ray.put(payload)

    @property
    def max_actors(self) -> int:
        """Actors in the pool at most."""
        return self.max_workers

    def close(self) -> None:
        """Kill the actors, and shut down the local Ray this engine started."""
        super().close()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_ray = False

    # -- how an actor is called ----------------------------------------------------------------

    def _send(
        self,
        worker: Any,
        client_id: ClientId,
        instruction: Instruction,
        state: NodeState,
        ticket: int,
    ) -> Any:
        return worker.run.remote(client_id, instruction, state, ticket)

    def _wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        return ready

    def _receive(self, worker: Any, handle: Any) -> tuple[Result | Failure, NodeState | None]:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayActorError as error:
            raise WorkerLost(f"its Ray actor died: {error}") from error

    def _kill(self, worker: Any) -> None:
        self._ray.kill(worker)

    def _start_workers(self, count: int) -> list[Any]:
        ray = self._ray
        actors = [
            self._actor_class.remote(self._payload_ref, self._actor_warm) for _ in range(count)
        ]
        try:
            ray.get([actor.ready.remote() for actor in actors], timeout=WORKER_START_TIMEOUT)
        except Exception as error:
            for actor in actors:
                ray.kill(actor)
            raise ConfigurationError(
                "the ray engine could not rebuild client_fn in a Ray worker "
                f"({type(error).__name__}: {error}); client_fn and what it uses must be "
                "importable by the Ray workers (install your package on every node, or define "
                "client_fn in the driver script)"
            ) from error
        log.info("ray engine: %d actor(s) ready", len(actors))
        return actors
