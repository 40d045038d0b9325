"""Who is connected to the server, under which node id, and which instructions they still owe.

Each client stream is a `Connection`. The `Registry` admits connections (checking the node id
against the client's token), names the connected clients, waits for enough of them, and keeps the
instructions awaited from each, so that a connection that ends turns everything it owed into a
failure at once.

Locks: the registry's lock is never held while calling into anything that takes another lock
(connections are ended, slots released and logs written outside it), except queue puts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from roost.core.types import ClientId, Failure, Instruction, Result
from roost.errors import ConfigurationError, NotEnoughClientsError, RoostError
from roost.transport.grpc.conduct import Summary
from roost.transport.grpc.security import TokenStore, check_node_id
from roost.transport.grpc.uploads import Slot, Upload

log = logging.getLogger(__name__)

_CLOSE = None  # outbox sentinel: end the stream
_WAIT_LOG_INTERVAL_S = 30.0

Status = tuple[grpc.StatusCode, str]
Sink = queue.Queue  # of (client_id, outcome, slot or None), one per `run`


def some_of(names: Sequence[str], limit: int = 10) -> str:
    """`names` for a log line: all of a few, the first `limit` of many (logs stay O(1) per line)."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, … ({len(names) - limit} more)"


class Refused(Exception):
    """A client the server will not admit; the reason goes back to it."""


class Connection:
    """One client's stream: what to send it, and the result it is in the middle of sending.

    The stream is served on the server's event loop; `send` and `end` may be called from any
    thread (the round loop sends instructions from its own).
    """

    def __init__(
        self, peer: str, identities: dict[str, str], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.peer = peer
        # What the client proved about its name: {"token": node, "certificate": node}.
        self.identities = identities
        self.node_id: str | None = None
        self.outbox: asyncio.Queue[Iterable[bytes] | None] = asyncio.Queue()
        self.closed = threading.Event()
        self.status: Status | None = None
        self.upload: Upload | None = None
        self.instructions_sent = 0
        self._loop = loop
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"client {self.node_id} ({self.peer})" if self.node_id else f"peer {self.peer}"

    def send(self, frames: Iterable[bytes]) -> None:
        if not self.closed.is_set():
            self._post(frames)

    def end(self, frames: Iterable[bytes] = (), status: Status | None = None) -> None:
        """Send `frames`, then end the stream (with `status`, when it is an error)."""
        with self._lock:
            if self.closed.is_set():
                return
            self.status = status
            self.closed.set()
        self._post(frames)
        self._post(_CLOSE)

    def _post(self, item: Iterable[bytes] | None) -> None:
        # RuntimeError: the server's loop has stopped, so the stream is gone already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.outbox.put_nowait, item)

    def start_upload(self, upload: Upload) -> bool:
        """Make `upload` this connection's; False (and its slot given back) if it has ended."""
        with self._lock:
            if not self.closed.is_set():
                self.upload = upload
                return True
        upload.release()
        return False

    def finish_upload(self) -> Upload | None:
        """The upload in progress, no longer this connection's."""
        with self._lock:
            upload, self.upload = self.upload, None
        return upload

    def release_upload(self) -> None:
        """Abandon the upload in progress, giving its slot back."""
        upload = self.finish_upload()
        if upload is not None:
            upload.release()


@dataclass(frozen=True)
class Awaited:
    """An instruction sent to a client whose answer a `run` is waiting for."""

    connection: Connection
    client_id: ClientId
    message_id: int
    instruction: Instruction
    sink: Sink


class Registry:
    """The connections, the admitted clients by node id, and the instructions awaited from them."""

    def __init__(self, store: TokenStore | None) -> None:
        self.store = store
        # Outsiders can repeat refused connections at will: summarised, not a line each, and
        # apart by cause, so the first of each cause is logged in full.
        self.token_refusals = Summary(
            "refused a connection %s",
            "refused %d more connection(s) without an admitted token (%d in all; latest: %s)",
        )
        self.hello_refusals = Summary(
            "refused a hello %s",
            "refused %d more hello(s) (%d in all; latest: %s)",
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clients: dict[ClientId, Connection] = {}
        self._connections: set[Connection] = set()
        self._awaited: dict[int, Awaited] = {}
        self._ids = itertools.count(1)
        self.closing = False

    # -- connections --------------------------------------------------------------------------

    def connect(
        self,
        peer: str,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        certificate_node: str | None = None,
    ) -> Connection | None:
        """A new stream's connection, not admitted until it says hello; None when closing.

        `certificate_node` is the node named by the client's verified certificate, if any.
        """
        identities = {}
        if self.store is not None and (token_node := self.store.identify(metadata)) is not None:
            identities["token"] = token_node
        if certificate_node is not None:
            identities["certificate"] = certificate_node
        connection = Connection(peer, identities, asyncio.get_running_loop())
        with self._lock:
            if self.closing:
                return None
            self._connections.add(connection)
        return connection

    def admit(self, connection: Connection, node_id: str) -> bool:
        """Register `connection` as client `node_id`; False when the server is closing.

        Raises `Refused` for an invalid node id or one the client's token was not issued for.
        """
        try:
            node_id = check_node_id(node_id)
        except ConfigurationError as error:
            raise Refused(str(error)) from None
        for proof, named in connection.identities.items():
            if node_id != named:
                raise Refused(f"this {proof} was issued for node {named!r}, not {node_id!r}")
        with self._changed:
            if self.closing:
                return False
            previous = self._clients.get(node_id)
            connection.node_id = node_id
            self._clients[node_id] = connection
            connected = sorted(self._clients)
            # Logged before anyone waiting is woken, so the log never shows a round starting
            # with a client it has not yet said joined.
            log.info(
                "client %s connected from %s (%d connected: %s)",
                node_id,
                connection.peer,
                len(connected),
                some_of(connected),
            )
            self._changed.notify_all()
        if previous is not None:
            # The same node connecting again means its old connection is dead, even if the
            # network has not said so yet.
            self.drop(previous, "replaced by a new connection of the same node")
        return True

    def drop(self, connection: Connection, reason: str, kind: str = "disconnected") -> None:
        """End and forget a connection; every instruction it still owed becomes a failure.

        Safe to call any number of times, from any thread: the upload slot is given back on
        every call, even when an earlier call already forgot the connection.
        """
        connection.end()
        connection.release_upload()
        with self._changed:
            if connection not in self._connections:
                return
            self._connections.discard(connection)
            node_id = connection.node_id
            registered = node_id is not None and self._clients.get(node_id) is connection
            if registered:
                del self._clients[node_id]
            owed = [
                mid for mid, awaited in self._awaited.items() if awaited.connection is connection
            ]
            for mid in owed:
                awaited = self._awaited.pop(mid)
                awaited.sink.put(
                    (awaited.client_id, Failure(awaited.client_id, reason, kind), None)
                )
            remaining = sorted(self._clients)
            closing = self.closing
            self._changed.notify_all()
        if registered and not closing:
            log.warning(
                "%s disconnected: %s (%d connected%s)",
                connection.name,
                reason,
                len(remaining),
                f": {some_of(remaining)}" if remaining else "",
            )

    def connected(self) -> list[ClientId]:
        """Ids of the clients connected now, sorted."""
        with self._lock:
            return sorted(self._clients)

    def uploading(self) -> list[Connection]:
        """Connections granted an upload and in the middle of sending its chunks."""
        with self._lock:
            connections = list(self._connections)
        return [c for c in connections if c.upload is not None]

    def wait_for(self, count: int, timeout: float | None) -> list[ClientId]:
        """Block until `count` clients are connected; return all connected ids, sorted."""
        deadline = None if timeout is None else time.monotonic() + timeout
        next_log = 0.0
        with self._changed:
            while len(self._clients) < count:
                if self.closing:
                    raise RoostError("the server is shutting down")
                now = time.monotonic()
                if now >= next_log:
                    self._log_waiting(count)
                    next_log = now + _WAIT_LOG_INTERVAL_S
                if deadline is not None and now >= deadline:
                    raise NotEnoughClientsError(
                        f"only {len(self._clients)} of the {count} clients the strategy needs "
                        f"connected within {timeout:g} s; start more clients or lower "
                        "--min-clients (the strategy's min_available_clients)"
                    )
                wait = next_log - now if deadline is None else min(next_log, deadline) - now
                self._changed.wait(max(wait, 0.01))
            return sorted(self._clients)

    def _log_waiting(self, count: int) -> None:
        connected = sorted(self._clients)
        listed = f": {some_of(connected)}" if connected else ""
        log.info("waiting for %d client(s); %d connected%s", count, len(connected), listed)

    def begin_close(self) -> list[Connection] | None:
        """Admit no one any more; the connections to end, or None if already closing."""
        with self._changed:
            if self.closing:
                return None
            self.closing = True
            self._changed.notify_all()
            return list(self._connections)

    def wait_until_empty(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every connection to go away."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._connections and time.monotonic() < deadline:
                self._changed.wait(0.05)

    # -- awaited instructions -----------------------------------------------------------------

    def expect(self, client_id: ClientId, instruction: Instruction, sink: Sink) -> Awaited | None:
        """Await an answer to `instruction` from `client_id`; None if it is not connected."""
        with self._lock:
            if self.closing:
                raise RoostError("the server is shutting down")
            connection = self._clients.get(client_id)
            if connection is None or connection.closed.is_set():
                return None
            awaited = Awaited(connection, client_id, next(self._ids), instruction, sink)
            self._awaited[awaited.message_id] = awaited
            connection.instructions_sent += 1
            return awaited

    def awaited_from(self, connection: Connection, message_id: int) -> Awaited | None:
        """The awaited instruction `message_id`, if this connection may answer it."""
        with self._lock:
            return self._take(connection, message_id)

    def awaits(self, connection: Connection, message_id: int) -> bool:
        return self.awaited_from(connection, message_id) is not None

    def deliver(
        self,
        connection: Connection,
        message_id: int,
        outcome: Result | Failure,
        slot: Slot | None = None,
    ) -> bool:
        """Hand an outcome to the waiting `run`; False if nobody awaits it any more."""
        with self._lock:
            awaited = self._take(connection, message_id)
            if awaited is None:
                return False
            del self._awaited[message_id]
            # Under the lock, so that a run that times out sees either the outcome or the wait.
            awaited.sink.put((awaited.client_id, outcome, slot))
            return True

    def forget(self, sink: Sink) -> list[Awaited]:
        """Stop awaiting every instruction of one `run`; late answers will be dropped as stale."""
        with self._lock:
            ids = [mid for mid, awaited in self._awaited.items() if awaited.sink is sink]
            return [self._awaited.pop(mid) for mid in ids]

    def _take(self, connection: Connection, message_id: int) -> Awaited | None:
        awaited = self._awaited.get(message_id)
        return awaited if awaited is not None and awaited.connection is connection else None
