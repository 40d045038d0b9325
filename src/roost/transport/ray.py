"""The Ray engine: the process engine's pool of reusable workers, as Ray actors on a cluster.

Each actor receives `client_fn` once and then builds and runs one client per call, exactly as the
sequential engine does. `address` connects to an existing cluster (`ray.init(address=...)`); without
one, and when Ray is not already initialized, a local Ray instance is started and shut down by
`close()`. A client past `round_timeout` is a failure and its actor is replaced; so is a client
whose actor dies. Requires Ray (`pip install "roost[ray]"`).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from roost.client.client import ClientFn, Context
from roost.core.types import ClientId, Config, Failure, Instruction, Outcome
from roost.errors import ConfigurationError
from roost.transport.inprocess import run_instruction, simulation_clients
from roost.transport.process import WORKER_START_TIMEOUT, serialize_client_fn

log = logging.getLogger(__name__)


class _ClientActor:
    """Holds the rebuilt client_fn; runs one instruction per call."""

    def __init__(self, payload: bytes, num_clients: int, run_config: Config) -> None:
        self.client_fn = pickle.loads(payload)
        self.num_clients = num_clients
        self.run_config = run_config

    def ready(self) -> bool:
        return True

    def run(self, client_id: ClientId, instruction: Instruction):
        context = Context(
            partition_id=int(client_id),
            num_partitions=self.num_clients,
            node_id=client_id,
            run_config=dict(self.run_config),
        )
        return run_instruction(self.client_fn, context, instruction)


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


class RayTransport:
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
    """

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
    ) -> None:
        if num_clients < 1:
            raise ConfigurationError(f"num_clients must be at least 1, got {num_clients}")
        if not num_cpus_per_client > 0:
            raise ConfigurationError(f"num_cpus_per_client must be > 0, got {num_cpus_per_client}")
        if max_actors is not None and max_actors < 1:
            raise ConfigurationError(f"max_actors must be >= 1, got {max_actors}")
        self._ray = ray = _import_ray()
        self.num_clients = num_clients
        self.run_config = dict(run_config or {})
        payload = serialize_client_fn(client_fn, "ray")
        self._owns_ray = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING}
            options.update(init_kwargs or {})
            ray.init(address=address, **options)
            self._owns_ray = True
        elif address is not None:
            log.info("Ray is already initialized in this process; address=%r is not used", address)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.max_actors = max_actors or max(1, int(cpus // num_cpus_per_client))
        self._actor_class = _actor_class(
            ray, float(num_cpus_per_client), float(num_gpus_per_client)
        )
        self._payload_ref = ray.put(payload)
        self._actors: list[Any] = []

    # -- Transport -----------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        return simulation_clients(self.num_clients, count)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        wanted = min(self.max_actors, max(len(cohort), 1))
        if len(self._actors) < wanted:
            self._actors += self._start(wanted - len(self._actors))
        pending = deque(cohort)
        idle = list(self._actors)
        busy: dict[Any, tuple[Any, ClientId, float]] = {}  # ObjectRef -> (actor, client, start)
        try:
            yield from self._dispatch(pending, idle, busy, timeout)
        finally:
            for actor, _, _ in busy.values():  # left early: free the actors still working
                self._replace(actor)

    def _dispatch(
        self,
        pending: deque,
        idle: list[Any],
        busy: dict[Any, tuple[Any, ClientId, float]],
        timeout: float | None,
    ) -> Iterator[Outcome]:
        ray = self._ray
        while pending or busy:
            while pending and idle:
                actor = idle.pop()
                client_id, instruction = pending.popleft()
                busy[actor.run.remote(client_id, instruction)] = (
                    actor,
                    client_id,
                    time.monotonic(),
                )
            wait_for = None
            if timeout is not None:
                first_deadline = min(started for _, _, started in busy.values()) + timeout
                wait_for = max(0.0, first_deadline - time.monotonic())
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=wait_for)
            for ref in ready:
                actor, client_id, _ = busy.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as error:
                    idle.append(self._replace(actor))
                    yield client_id, Failure(client_id, f"its Ray actor died: {error}", "error")
                    continue
                except Exception as error:
                    idle.append(actor)
                    yield client_id, Failure(client_id, f"{type(error).__name__}: {error}")
                    continue
                idle.append(actor)
                yield client_id, result
            if timeout is not None:
                now = time.monotonic()
                for ref, (actor, client_id, started) in list(busy.items()):
                    if now - started >= timeout:
                        del busy[ref]
                        idle.append(self._replace(actor))
                        yield client_id, Failure(
                            client_id, f"no result within the round timeout of {timeout:g} s",
                            "timeout",
                        )

    def close(self) -> None:
        actors, self._actors = self._actors, []
        for actor in actors:
            self._ray.kill(actor)
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_ray = False

    # -- actors --------------------------------------------------------------------------------

    def _start(self, count: int) -> list[Any]:
        ray = self._ray
        actors = [
            self._actor_class.remote(self._payload_ref, self.num_clients, self.run_config)
            for _ in range(count)
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

    def _replace(self, actor: Any) -> Any:
        self._ray.kill(actor)
        fresh = self._start(1)[0]
        self._actors[self._actors.index(actor)] = fresh
        return fresh

    def __enter__(self) -> RayTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
