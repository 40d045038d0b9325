"""A process engine worker: `python -m roost.engines.worker FD`, started by `ProcessEngine`.

The worker is a fresh interpreter whose main module is this one, never the user's script, so a
script (or a notebook turned into one) that calls `run_simulation` at module level, with no
`if __name__ == "__main__":` guard, is not run again in every worker. What the worker needs of
the user's code arrives over the socket `FD` (a socket pair's end, inherited from the server):
the server's `sys.path` (so the modules `client_fn` refers to by name import as they do there)
and the federation, pickled with cloudpickle, which sends functions and classes of `__main__` by
value. Afterwards only instructions and results travel over the socket.

Messages, all pickled by `multiprocessing.connection` (local to this machine, between roost's own
processes): the server sends `(sys_path, payload, warm)` once; the worker answers `("ready", pid)`
or `("error", why)`; then each `(client_id, instruction, state, ticket)` gets `(result, state)`,
and `None` (or the socket closing) ends the worker.

Told to stop, the worker runs its exit handlers (`atexit`, logging's included), flushes its
output and ends without tearing its interpreter down module by module: with TensorFlow loaded
that teardown took about a second of every worker's exit, at the end of every run. The clients
it kept are dropped and collected first, so their finalizers (files they hold) still run.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pickle
import sys
from multiprocessing.connection import Connection

from roost.core.types import Failure
from roost.engines.warm import ClientHost


def serve(connection: Connection) -> bool:
    """A worker's life: rebuild the federation (its client_fn), then answer instructions until
    told to stop (True) or until the server goes away or the federation cannot be rebuilt
    (False)."""
    try:
        sys_path, payload, warm = connection.recv()
    except (EOFError, OSError):
        return False
    sys.path[:] = [entry for entry in sys_path if entry] + [
        entry for entry in sys.path if entry not in sys_path
    ]
    try:
        federation = pickle.loads(payload)
    except BaseException as error:  # any failure to rebuild client_fn is reported, not raised
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return False
    host = ClientHost(federation, warm)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return False
        if message is None:
            return True
        client_id, instruction, state, ticket = message
        result, state = host.run(client_id, instruction, state, ticket)
        try:
            connection.send((result, state))
        except (EOFError, OSError):
            return False
        except Exception as error:  # e.g. a metric value that cannot be pickled
            failure = Failure(client_id, f"result could not be sent back: {error}")
            connection.send((failure, None))


def main(argv: list[str] | None = None) -> int:
    """Serve the server on the socket whose file descriptor is the first argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print(
            "roost.engines.worker is started by roost's process engine, not by hand",
            file=sys.stderr,
        )
        return 2
    connection = Connection(int(args[0]))
    try:
        stopped = serve(connection)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the server reports it
        return 130
    finally:
        connection.close()
    if stopped:
        exit_quickly()
    return 0


def exit_quickly() -> None:
    """End this process as Python's exit would, minus the interpreter's teardown: collect what
    the worker dropped, run the exit handlers, flush the output, exit with status 0."""
    gc.collect()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A stream closed or replaced by the user's code has nothing of ours to flush.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
