"""The process engine: a pool of worker processes, started once and reused every round.

Each worker receives `client_fn` once, when it starts; afterwards only instructions and results
travel between the server process and its workers (over local pipes; nothing leaves the machine).
A worker builds the client for each instruction it gets, exactly as the sequential engine does, so
any `client_fn` works, provided it can be sent to another process (it must be picklable).

A client past `round_timeout` is a failure and its worker is replaced, so a hung client cannot hold
a worker; a worker that dies (a crash, `os._exit`) is a failure of its client and is replaced too.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from roost.client.client import ClientFn, Context
from roost.core.types import ClientId, Config, Failure, Instruction, Outcome
from roost.errors import ConfigurationError, RoostError
from roost.transport.inprocess import run_instruction, simulation_clients

log = logging.getLogger(__name__)

# Seconds a new worker may take to import roost and rebuild client_fn before start-up fails.
WORKER_START_TIMEOUT = 120.0
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def serialize_client_fn(client_fn: ClientFn, engine: str = "process") -> bytes:
    """`client_fn` as bytes for another process: cloudpickle when installed (it also handles
    lambdas, closures and functions of `__main__`), the standard pickle otherwise."""
    try:
        import cloudpickle
    except ImportError:
        cloudpickle = None
    try:
        return (cloudpickle or pickle).dumps(client_fn)
    except Exception as error:
        hint = "" if cloudpickle else " (or install cloudpickle, which also sends closures)"
        raise ConfigurationError(
            f"the {engine} engine sends client_fn to worker processes, so it must be picklable, "
            f"but pickling it failed ({type(error).__name__}: {error}). Define client_fn and "
            f"the objects it holds at module level{hint}, or use engine='sequential'"
        ) from error


def _worker_main(
    connection: Connection,
    payload: bytes,
    num_clients: int,
    run_config: Config,
    threads: int,
) -> None:
    """A worker's life: rebuild client_fn, then answer instructions until told to stop."""
    for variable in _THREAD_VARIABLES:  # before the client's imports read them
        os.environ.setdefault(variable, str(threads))
    try:
        client_fn = pickle.loads(payload)
    except BaseException as error:
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    _limit_torch_threads(threads)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        client_id, instruction = message
        context = Context(
            partition_id=int(client_id),
            num_partitions=num_clients,
            node_id=client_id,
            run_config=dict(run_config),
        )
        result = run_instruction(client_fn, context, instruction)
        try:
            connection.send((client_id, result))
        except Exception as error:  # e.g. a metric value that cannot be pickled
            connection.send(
                (client_id, Failure(client_id, f"result could not be sent back: {error}"))
            )


def _limit_torch_threads(threads: int) -> None:
    """Set torch's thread count when torch is already imported (by the main script a spawned
    worker re-imports, or by client_fn), which the environment variables came too late for."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)


class _Worker:
    def __init__(self, process: Any, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.client_id: ClientId | None = None
        self.started = 0.0

    def stop(self, grace: float = 2.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(grace)
        self.connection.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5.0)
        self.connection.close()


class ProcessTransport:
    """Run clients in a pool of worker processes on this machine.

    Args:
        client_fn: builds a client for a `Context`; must be picklable.
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client in `context.run_config`.
        max_workers: worker processes (default: all cores).
        threads_per_worker: math-library threads per worker (default: cores / workers, ≥ 1).
        start_method: "spawn" (default: safe with threads, CUDA and torch) or "forkserver".

    Workers start on the first round and are reused until `close()`.
    """

    def __init__(
        self,
        client_fn: ClientFn,
        num_clients: int,
        run_config: Config | None = None,
        *,
        max_workers: int | None = None,
        threads_per_worker: int | None = None,
        start_method: str = "spawn",
    ) -> None:
        if num_clients < 1:
            raise ConfigurationError(f"num_clients must be at least 1, got {num_clients}")
        cores = os.cpu_count() or 1
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers or cores
        self.threads_per_worker = threads_per_worker or max(1, cores // self.max_workers)
        self.num_clients = num_clients
        self.run_config = dict(run_config or {})
        self._payload = serialize_client_fn(client_fn)
        self._context = multiprocessing.get_context(start_method)
        self._workers: list[_Worker] = []

    # -- Transport -----------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        return simulation_clients(self.num_clients, count)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        if not self._workers:
            self._workers = self._start(min(self.max_workers, max(len(cohort), 1)))
        elif len(self._workers) < min(self.max_workers, len(cohort)):
            self._workers += self._start(min(self.max_workers, len(cohort)) - len(self._workers))
        pending = deque(cohort)
        idle = list(self._workers)
        busy: dict[Connection, _Worker] = {}
        try:
            yield from self._dispatch(pending, idle, busy, timeout)
        finally:
            # Left early (the consumer stopped): results still in flight must not leak into the
            # next round, so their workers are replaced.
            for worker in busy.values():
                self._replace(worker)

    def _dispatch(
        self,
        pending: deque,
        idle: list[_Worker],
        busy: dict[Connection, _Worker],
        timeout: float | None,
    ) -> Iterator[Outcome]:
        while pending or busy:
            while pending and idle:
                worker = idle.pop()
                client_id, instruction = pending.popleft()
                try:
                    worker.connection.send((client_id, instruction))
                except (OSError, ValueError) as error:  # the worker is gone
                    idle.append(self._replace(worker))
                    yield client_id, Failure(client_id, f"worker unavailable: {error}")
                    continue
                worker.client_id, worker.started = client_id, time.monotonic()
                busy[worker.connection] = worker
            wait_for = None
            if timeout is not None:
                first_deadline = min(w.started for w in busy.values()) + timeout
                wait_for = max(0.0, first_deadline - time.monotonic())
            for connection in wait(list(busy), wait_for):
                worker = busy.pop(connection)
                try:
                    client_id, result = connection.recv()
                except (EOFError, OSError):
                    worker.process.join(1.0)
                    code = worker.process.exitcode
                    idle.append(self._replace(worker))
                    yield worker.client_id, Failure(
                        worker.client_id, f"its worker process died (exit code {code})", "error"
                    )
                    continue
                yield client_id, result
                idle.append(worker)
            if timeout is not None:
                now = time.monotonic()
                for connection, worker in list(busy.items()):
                    if now - worker.started >= timeout:
                        del busy[connection]
                        idle.append(self._replace(worker))
                        yield worker.client_id, Failure(
                            worker.client_id,
                            f"no result within the round timeout of {timeout:g} s",
                            "timeout",
                        )

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    # -- workers -------------------------------------------------------------------------------

    def _start(self, count: int) -> list[_Worker]:
        """Start `count` workers and wait until each has rebuilt client_fn."""
        workers = []
        for _ in range(count):
            parent, child = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_worker_main,
                args=(child, self._payload, self.num_clients, self.run_config,
                      self.threads_per_worker),
                name="roost-worker",
                daemon=True,
            )
            process.start()
            child.close()
            workers.append(_Worker(process, parent))
        try:
            for worker in workers:
                if not worker.connection.poll(WORKER_START_TIMEOUT):
                    raise RoostError(
                        f"a worker process did not start within {WORKER_START_TIMEOUT:g} s"
                    )
                status, detail = worker.connection.recv()
                if status != "ready":
                    raise ConfigurationError(
                        "the process engine could not rebuild client_fn in a worker process "
                        f"({detail}). client_fn must be picklable and importable in a fresh "
                        "Python process: define it at module level of an importable module, "
                        "and guard scripts with `if __name__ == '__main__':`"
                    )
        except (EOFError, OSError) as error:
            codes = []
            for worker in workers:
                worker.kill()
                codes.append(worker.process.exitcode)
            raise RoostError(
                f"a worker process exited while starting (exit codes {codes}). Worker processes "
                "import the main script again: guard its top-level code with "
                "`if __name__ == '__main__':`"
            ) from error
        except BaseException:
            for worker in workers:
                worker.kill()
            raise
        log.info("process engine: %d worker process(es) ready", len(workers))
        return workers

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill `worker` (hung or dead) and start a fresh one in its place."""
        worker.kill()
        fresh = self._start(1)[0]
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def __enter__(self) -> ProcessTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
