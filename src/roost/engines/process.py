"""The process engine: a pool of worker processes, started once and reused every round.

Each worker receives `client_fn` once, when it starts; afterwards only instructions and results
travel between the server process and its workers (over local pipes; nothing leaves the machine).
A worker builds the client for each instruction it gets, exactly as the sequential engine does, so
any `client_fn` works, provided it can be sent to another process (it must be picklable); with
`warm_clients`, each worker keeps the clients it built and the pool sends a node back to the worker
that holds its client (see `roost.engines.pool`).

The pool itself (dispatch, timeouts, replacing hung or dead workers) is `roost.engines.pool`; this
module says how a worker process starts, how a call travels over its pipe and how it stops.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import sys
from multiprocessing.connection import Connection, wait
from typing import Any

from roost.client.client import ClientFn
from roost.core.types import ClientId, Config, Failure, Instruction, Result
from roost.engines.federation import Federation
from roost.engines.pool import WORKER_START_TIMEOUT, WorkerLost, WorkerPool, serialize_federation
from roost.engines.warm import ClientHost, NodeState, WarmClients, warm_setting
from roost.errors import ConfigurationError, RoostError

log = logging.getLogger(__name__)

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _worker_main(
    connection: Connection, payload: bytes, threads: int, warm: WarmClients | None
) -> None:
    """A worker's life: rebuild the federation (its client_fn), then answer instructions until
    told to stop."""
    for variable in _THREAD_VARIABLES:  # before the client's imports read them
        os.environ.setdefault(variable, str(threads))
    try:
        federation = pickle.loads(payload)
    except BaseException as error:
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    _limit_torch_threads(threads)
    host = ClientHost(federation, warm)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        client_id, instruction, state, ticket = message
        result, state = host.run(client_id, instruction, state, ticket)
        try:
            connection.send((result, state))
        except Exception as error:  # e.g. a metric value that cannot be pickled
            failure = Failure(client_id, f"result could not be sent back: {error}")
            connection.send((failure, None))


def _limit_torch_threads(threads: int) -> None:
    """Set torch's thread count when torch is already imported (by the main script a spawned
    worker re-imports, or by client_fn), which the environment variables came too late for."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)


class _Worker:
    """A worker process and the server's end of its pipe."""

    def __init__(self, process: Any, connection: Connection) -> None:
        self.process = process
        self.connection = connection

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


class ProcessEngine(WorkerPool[_Worker, Connection]):
    """Run clients in a pool of worker processes on this machine.

    Args:
        client_fn: builds a client for a `Context`; must be picklable.
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client in `context.run_config`.
        max_workers: worker processes (default: all cores).
        threads_per_worker: math-library threads per worker (default: cores / workers, ≥ 1).
        start_method: "spawn" (default: safe with threads, CUDA and torch) or "forkserver".
        warm_clients: keep the clients each worker builds (True, or `WarmClients(...)` bounds,
            split among the workers); see `roost.engines.warm` for how that can change the
            results of clients that keep state. Default False: a fresh client per instruction.
        in_order: hand results to the aggregator in the cohort's order (default), so that a seed
            gives the same bits on every run. A result that finishes before those ahead of it
            waits in memory, and workers wait once they are a window ahead of a slow client
            (see `roost.engines.pool`); with stragglers, `False` hands each result on as it
            finishes instead (at most about one waiting result per worker, no worker waits),
            and the model may then differ from run to run in its last bits.

    Workers start on the first exchange and are reused until `close()`.
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
        warm_clients: bool | WarmClients = False,
        in_order: bool = True,
    ) -> None:
        cores = os.cpu_count() or 1
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
        warm = warm_setting(warm_clients)
        federation = Federation.of(client_fn, num_clients, run_config)
        super().__init__(federation, max_workers or cores, warm, in_order=in_order)
        self._worker_warm = None if warm is None else warm.share(self.max_workers)
        self.threads_per_worker = threads_per_worker or max(1, cores // self.max_workers)
        self._payload = serialize_federation(federation, "process")
        self._context = multiprocessing.get_context(start_method)

    # -- how a worker process is called ----------------------------------------------------------

    def _send(
        self,
        worker: _Worker,
        client_id: ClientId,
        instruction: Instruction,
        state: NodeState,
        ticket: int,
    ) -> Connection:
        try:
            worker.connection.send((client_id, instruction, state, ticket))
        except (OSError, ValueError) as error:  # the worker is gone
            raise WorkerLost(str(error)) from error
        return worker.connection

    def _wait(self, handles: list[Connection], timeout: float | None) -> list[Connection]:
        return wait(handles, timeout)

    def _receive(
        self, worker: _Worker, handle: Connection
    ) -> tuple[Result | Failure, NodeState | None]:
        try:
            result, state = handle.recv()
        except (EOFError, OSError) as error:
            worker.process.join(1.0)
            code = worker.process.exitcode
            raise WorkerLost(f"its worker process died (exit code {code})") from error
        return result, state

    def _kill(self, worker: _Worker) -> None:
        worker.kill()

    def _stop(self, worker: _Worker) -> None:
        worker.stop()

    def _start_workers(self, count: int) -> list[_Worker]:
        """Start `count` workers and wait until each has rebuilt client_fn."""
        workers = []
        for _ in range(count):
            parent, child = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_worker_main,
                args=(child, self._payload, self.threads_per_worker, self._worker_warm),
                name="roost-worker",
                daemon=True,
            )
            process.start()
            child.close()
            workers.append(_Worker(process, parent))
        try:
            for worker in workers:
                _await_ready(worker)
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


def _await_ready(worker: _Worker) -> None:
    """Wait for a new worker's first message: ready, or why client_fn could not be rebuilt."""
    if not worker.connection.poll(WORKER_START_TIMEOUT):
        raise RoostError(f"a worker process did not start within {WORKER_START_TIMEOUT:g} s")
    status, detail = worker.connection.recv()
    if status != "ready":
        raise ConfigurationError(
            "the process engine could not rebuild client_fn in a worker process "
            f"({detail}). client_fn must be picklable and importable in a fresh "
            "Python process: define it at module level of an importable module, "
            "and guard scripts with `if __name__ == '__main__':`"
        )
