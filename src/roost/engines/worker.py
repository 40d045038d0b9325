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
"""

from __future__ import annotations

import os
import pickle
import sys
from multiprocessing.connection import Connection

from roost.core.types import Failure
from roost.engines.warm import ClientHost


def serve(connection: Connection) -> None:
    """A worker's life: rebuild the federation (its client_fn), then answer instructions until
    told to stop or until the server goes away."""
    try:
        sys_path, payload, warm = connection.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = [entry for entry in sys_path if entry] + [
        entry for entry in sys.path if entry not in sys_path
    ]
    try:
        federation = pickle.loads(payload)
    except BaseException as error:  # any failure to rebuild client_fn is reported, not raised
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
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
        except (EOFError, OSError):
            return
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
        serve(connection)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the server reports it
        return 130
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
