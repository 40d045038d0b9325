"""The process engine: a pool of worker processes, started once and reused every round.

Each worker is a fresh Python interpreter running roost's own worker (`roost.engines.worker`), not
the user's script: a script without an `if __name__ == "__main__":` guard runs once, in the server
process, however many workers there are. Each worker receives `client_fn` once, when it starts
(cloudpickled: functions and classes of the main script travel by value); afterwards only
instructions and results travel between the server process and its workers (over local socket
pairs; nothing leaves the machine). A worker builds the client for each instruction it gets,
exactly as the sequential engine does, so any `client_fn` works, provided it can be sent to
another process; with `warm_clients`, each worker keeps the clients it built and the pool sends a
node back to the worker that holds its client (see `roost.engines.pool`). Workers keep the
frameworks their clients import, so only their first client pays for the import.

The pool itself (dispatch, timeouts, replacing hung or dead workers) is `roost.engines.pool`; this
module says how a worker process starts, how a call travels over its socket and how it stops.
Each worker's environment gets its share of the cores as thread counts and a passive OpenMP wait
policy, unless the user set them (`roost.engines.threads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from roost.client.client import ClientFn
from roost.core.types import ClientId, Config, Failure, Instruction, Result
from roost.engines.federation import Federation
from roost.engines.pool import WORKER_START_TIMEOUT, WorkerLost, WorkerPool, serialize_federation
from roost.engines.threads import worker_environment
from roost.engines.warm import NodeState, WarmClients, warm_setting
from roost.errors import ConfigurationError, RoostError, other_engines

log = logging.getLogger(__name__)

START_METHODS = ("spawn",)
"""How workers start: "spawn", a fresh interpreter running roost's worker entry point."""

# Seconds an idle worker gets to exit once told to, at the end of a run, before it is killed.
STOP_GRACE = 2.0

# Seconds after which a worker still starting is mentioned, so a slow start is never silent.
SLOW_START_NOTICE = 30.0

# The directory that holds the roost package, put first on a worker's PYTHONPATH so that the
# worker imports this roost (a source tree included) before it learns the server's sys.path.
_ROOST_ROOT = str(Path(__file__).resolve().parents[2])


class _Worker:
    """A worker process and the server's end of its socket."""

    def __init__(self, process: subprocess.Popen, connection: Connection) -> None:
        self.process = process
        self.connection = connection

    def exit_code(self, grace: float) -> int | None:
        """The process's exit status once it ends within `grace` seconds (negative: killed by
        that signal), else None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        return self.process.returncode

    def tell_to_stop(self) -> None:
        """Ask the worker to exit (it finishes nothing: it is idle)."""
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)

    def stop(self, grace: float = 2.0) -> None:
        self.tell_to_stop()
        if self.exit_code(grace) is None:
            self.kill()
        self.connection.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.exit_code(5.0)
        self.connection.close()


class ProcessEngine(WorkerPool[_Worker, Connection]):
    """Run clients in a pool of worker processes on this machine.

    Args:
        client_fn: builds a client for a `Context`; must be picklable.
        num_clients: how many clients (partitions) exist.
        run_config: passed to every client in `context.run_config`.
        max_workers: worker processes (default: all cores).
        threads_per_worker: math-library threads per worker (default: cores / workers, ≥ 1).
        start_method: "spawn" (the default and only one): each worker is a fresh interpreter
            running roost's worker entry point, which never imports the main script (fork
            would copy the server's threads and locks; forkserver re-ran the script).
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

    engine_name = "process"

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
        if start_method not in START_METHODS:
            raise ConfigurationError(
                f"start_method {start_method!r} is not supported: workers start as fresh "
                "interpreters running roost's worker (start_method='spawn', the default), "
                "which never re-run your script; leave start_method out"
            )
        if os.name == "nt":
            raise ConfigurationError(
                "the process engine's workers inherit a socket, which Windows does not allow; "
                f"use {other_engines('sequential', 'ray')} on Windows"
            )
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
        warm = warm_setting(warm_clients)
        federation = Federation.of(client_fn, num_clients, run_config)
        super().__init__(federation, max_workers or cores, warm, in_order=in_order)
        self._worker_warm = None if warm is None else warm.share(self.max_workers)
        self.threads_per_worker = threads_per_worker or max(1, cores // self.max_workers)
        self._payload = serialize_federation(federation, "process")

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
            code = worker.exit_code(1.0)
            raise WorkerLost(f"its worker process died ({_exit_status(code)})") from error
        return result, state

    def _kill(self, worker: _Worker) -> None:
        worker.kill()

    def _stop(self, worker: _Worker) -> None:
        worker.stop()

    def _stop_all(self, workers: list[_Worker]) -> None:
        # Every worker is told first, so they exit side by side: a worker's exit takes about a
        # second with TensorFlow loaded, and one after another that was seconds of every run.
        for worker in workers:
            worker.tell_to_stop()
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            worker.stop(max(0.0, deadline - time.monotonic()))

    def _start_workers(self, count: int) -> list[_Worker]:
        """Start `count` workers and wait until each has rebuilt client_fn."""
        env = worker_environment(self.threads_per_worker)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOST_ROOT, env.get("PYTHONPATH")]))
        workers: list[_Worker] = []
        try:
            for _ in range(count):
                workers.append(_launch(env))
            for worker in workers:  # all start at once; then each gets client_fn
                worker.connection.send((sys.path, self._payload, self._worker_warm))
            for worker in workers:
                _await_ready(worker)
        except (EOFError, OSError) as error:
            codes = [_exit_status(worker.exit_code(1.0)) for worker in workers]
            for worker in workers:
                worker.kill()
            raise RoostError(
                f"a process engine worker exited while starting ({'; '.join(codes)}; its "
                "error, if it printed one, is above); the run cannot go on without workers. "
                "Check that this Python can import roost and what client_fn uses, or use "
                f"{other_engines('sequential')}"
            ) from error
        except BaseException:
            for worker in workers:
                worker.kill()
            raise
        log.info("process engine: %d worker process(es) ready", len(workers))
        return workers


def _exit_status(code: int | None) -> str:
    """A worker's exit status in words."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (", perhaps for memory" if name == "SIGKILL" else "")
    return f"exit code {code}"


def _launch(env: dict[str, str]) -> _Worker:
    """Start one worker process on a new socket pair; return it without waiting for it."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "roost.engines.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the worker holds its own copy: its exit now reads as EOF here
    return _Worker(process, Connection(ours.detach()))


def _await_ready(worker: _Worker) -> None:
    """Wait for a new worker's first message: ready, or why client_fn could not be rebuilt."""
    patience = min(WORKER_START_TIMEOUT, SLOW_START_NOTICE)
    if not worker.connection.poll(patience):
        log.warning(
            "process engine: a worker has been starting for %g s (importing what client_fn "
            "needs); it gets %g s in all",
            patience,
            WORKER_START_TIMEOUT,
        )
    if not worker.connection.poll(WORKER_START_TIMEOUT - patience):
        raise RoostError(
            f"a process engine worker did not start within {WORKER_START_TIMEOUT:g} s (a "
            "machine out of memory or cores?); the run cannot go on without workers"
        )
    status, detail = worker.connection.recv()
    if status != "ready":
        raise ConfigurationError(
            "the process engine could not rebuild client_fn in a worker process "
            f"({detail}). client_fn must be picklable, and the modules it uses importable in "
            "a fresh Python process (they are, when the script imports them); or use "
            f"{other_engines('sequential')}"
        )
