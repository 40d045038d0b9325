"""The server side of deployment: a `Transport` over gRPC that the round loop drives unchanged.

Clients connect to the server and keep one bidirectional `Join` stream open for the whole run. The
transport keeps a registry of connected clients (`wait_for_clients`), sends a cohort's instructions
down their streams and yields results as they arrive (`run`).

What it checks before a result reaches the loop (which then validates it again, as for every
transport): the stream's framing, the declared sizes (against `max_message_bytes`, before
allocating anything), that the result answers an instruction this connection is still awaited for
(results of timed-out or earlier rounds, replays and answers to other clients' instructions are
dropped), and that its arrays have the global model's shapes and dtypes. A client is told why its
result was rejected; a client that breaks the protocol is disconnected; the run goes on.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from roost.core.types import (
    ClientId,
    EvaluateIns,
    Failure,
    FitIns,
    Instruction,
    Outcome,
    Result,
)
from roost.core.validation import validate_result
from roost.errors import ConfigurationError, InvalidMessageError, NotEnoughClientsError, RoostError
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire
from roost.transport.grpc.security import (
    PemSource,
    TokenAuthInterceptor,
    TokenStore,
    check_node_id,
    server_credentials,
)

log = logging.getLogger(__name__)

_CLOSE = None  # outbox sentinel: end the stream
_WAIT_LOG_INTERVAL_S = 30.0


class _Refused(Exception):
    """A Hello the server will not accept; the reason goes back to the client."""


class _Slot:
    """One of the server's upload slots: bounds how many received models sit in memory at once."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


class _Connection:
    """One client's stream: what to send it, and the message it is in the middle of sending."""

    def __init__(self, peer: str, token_node: str | None) -> None:
        self.peer = peer
        self.token_node = token_node
        self.node_id: str | None = None
        self.outbox: queue.Queue[Iterable[bytes] | None] = queue.Queue()
        self.closed = threading.Event()
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.assembly: wire.Assembly | None = None
        self.slot: _Slot | None = None

    @property
    def name(self) -> str:
        return f"client {self.node_id} ({self.peer})" if self.node_id else f"peer {self.peer}"

    def send(self, frames: Iterable[bytes]) -> None:
        if not self.closed.is_set():
            self.outbox.put(frames)

    def end(
        self, frames: Iterable[bytes] = (), status: tuple[grpc.StatusCode, str] | None = None
    ) -> None:
        """Send `frames`, then end the stream (with `status`, when it is an error)."""
        if self.closed.is_set():
            return
        self.status = status
        self.closed.set()
        self.outbox.put(frames)
        self.outbox.put(_CLOSE)

    def release_slot(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None


@dataclass(frozen=True)
class _Awaited:
    """An instruction sent to a client whose answer the round is waiting for."""

    connection: _Connection
    client_id: ClientId
    message_id: int
    instruction: Instruction
    sink: queue.Queue


def _rejection(message_id: int, reason: str) -> list[bytes]:
    return [wire.frame_bytes(rejection=pb.Rejection(message_id=message_id, reason=reason))]


class GrpcServerTransport:
    """Serve a federation over gRPC: the `Transport` that `roost.start_server` hands the loop.

    Args:
        address: `host:port` to listen on; port 0 picks a free port (see `port`).
        certificates: `(certificate_chain, private_key)` (or Flower's `(ca, chain, key)`), as PEM
            bytes or file paths, to serve TLS; None serves without TLS.
        auth_tokens: `{node_id: token}` or a tokens file (`node-id token` per line); when given,
            only clients presenting one of these tokens, under its node id, may join.
        max_message_bytes: largest result accepted, counting its array bytes.
        chunk_bytes: array bytes per frame sent.
        max_clients: most simultaneous connections.
        max_concurrent_uploads: results received at once; bounds the server's buffers of received
            models to about (this + 1) × model size however many clients answer.
        receive_window_bytes: HTTP/2 flow-control window of each client's stream: what gRPC may
            buffer per client beyond roost's own buffers. A fixed window (instead of gRPC's
            growing one) keeps that at clients × this rather than clients × model size; raise it
            for fast uploads over links with a long round-trip time.
        keepalive_s: seconds between HTTP/2 pings on an idle stream, so that a dead peer is noticed
            while a live client trains for as long as it needs.
        client_wait_timeout: seconds `wait_for_clients` waits by default; None waits forever.
        hello_timeout: seconds a new connection has to introduce itself.
    """

    def __init__(
        self,
        address: str,
        *,
        certificates: Sequence[PemSource] | None = None,
        auth_tokens: Mapping[str, str] | str | Path | None = None,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
        max_clients: int = 1000,
        max_concurrent_uploads: int = 8,
        receive_window_bytes: int = 1 << 20,
        keepalive_s: float = 30.0,
        client_wait_timeout: float | None = None,
        hello_timeout: float = 10.0,
    ) -> None:
        if not 0 < chunk_bytes <= wire.FRAME_LIMIT_BYTES - 1024:
            raise ConfigurationError(
                f"chunk_bytes must be in (0, {wire.FRAME_LIMIT_BYTES - 1024}], got {chunk_bytes}"
            )
        for name, value in (
            ("max_message_bytes", max_message_bytes),
            ("max_clients", max_clients),
            ("max_concurrent_uploads", max_concurrent_uploads),
            ("receive_window_bytes", receive_window_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        self.max_message_bytes = max_message_bytes
        self.chunk_bytes = chunk_bytes
        self.client_wait_timeout = client_wait_timeout
        self.hello_timeout = hello_timeout
        self._store = TokenStore.from_source(auth_tokens) if auth_tokens is not None else None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clients: dict[ClientId, _Connection] = {}
        self._connections: set[_Connection] = set()
        self._awaited: dict[int, _Awaited] = {}
        self._ids = itertools.count(1)
        self._uploads = threading.BoundedSemaphore(max_concurrent_uploads)
        self._closing = False

        keepalive_ms = int(keepalive_s * 1000)
        options = [
            ("grpc.max_receive_message_length", wire.FRAME_LIMIT_BYTES),
            ("grpc.max_send_message_length", wire.FRAME_LIMIT_BYTES),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", max(keepalive_ms, 10_000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", receive_window_bytes),
            ("grpc.http2.max_pings_without_data", 0),
            # Clients ping as often as every second while they train; that is not abuse.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
            # Without this, a second server could silently share the port with a first one.
            ("grpc.so_reuseport", 0),
        ]
        handler = grpc.method_handlers_generic_handler(
            wire.SERVICE,
            # No deserializer: frames arrive as bytes and are parsed by roost, after the
            # interceptor has authenticated the call, with roost's own checks and errors.
            {"Join": grpc.stream_stream_rpc_method_handler(self._join)},
        )
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_clients + 4, thread_name_prefix="roost-grpc"),
            handlers=[handler],
            interceptors=[TokenAuthInterceptor(self._store)] if self._store else [],
            options=options,
            maximum_concurrent_rpcs=max_clients,
        )
        self.tls = certificates is not None
        try:
            if certificates is not None:
                port = self._server.add_secure_port(address, server_credentials(certificates))
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError as error:
            port, reason = 0, str(error)
        else:
            reason = "the address is invalid or in use"
        if port == 0:
            raise ConfigurationError(
                f"cannot listen on {address}: {reason}; choose another port or stop the "
                "process using it"
            )
        self.port = port
        self.address = f"{address.rsplit(':', 1)[0]}:{port}"
        self._server.start()
        log.info(
            "roost server listening on %s (%s%s)",
            self.address,
            "TLS" if self.tls else "no TLS",
            ", token authentication" if self._store else "",
        )
        if self._store and not self.tls:
            log.warning("tokens travel in clear text without TLS; pass certificates outside tests")
        host = address.rsplit(":", 1)[0].strip("[]")
        if not (self._store or self.tls) and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "serving on %s without TLS or client authentication: anyone who can reach it can "
                "join the run; pass certificates and auth tokens, or listen on 127.0.0.1",
                self.address,
            )

    # -- Transport ----------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Block until `count` clients are connected; return all connected ids, sorted."""
        timeout = self.client_wait_timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        next_log = 0.0
        with self._changed:
            while len(self._clients) < count:
                if self._closing:
                    raise RoostError("the server is shutting down")
                now = time.monotonic()
                if now >= next_log:
                    log.info(
                        "waiting for %d client(s); %d connected%s",
                        count,
                        len(self._clients),
                        f": {', '.join(sorted(self._clients))}" if self._clients else "",
                    )
                    next_log = now + _WAIT_LOG_INTERVAL_S
                if deadline is not None and now >= deadline:
                    raise NotEnoughClientsError(
                        f"only {len(self._clients)} of the {count} clients the strategy needs "
                        f"connected within {timeout:g} s; start more clients or lower "
                        "min_available_clients"
                    )
                wait = next_log - now if deadline is None else min(next_log, deadline) - now
                self._changed.wait(max(wait, 0.01))
            return sorted(self._clients)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Send each instruction; yield outcomes as they arrive, timeouts and disconnects too."""
        sink: queue.Queue[tuple[ClientId, Result | Failure, _Slot | None]] = queue.Queue()
        encoded: dict[int, wire.Encoded] = {}
        absent: list[Outcome] = []
        expected = 0
        try:
            for client_id, instruction in cohort:
                key = id(instruction)
                if key not in encoded:  # one encoding serves every client given this instruction
                    try:
                        encoded[key] = wire.encode_instruction(instruction, self.chunk_bytes)
                    except InvalidMessageError as error:
                        raise ConfigurationError(f"cannot send the instruction: {error}") from None
                with self._lock:
                    if self._closing:
                        raise RoostError("the server is shutting down")
                    connection = self._clients.get(client_id)
                    if connection is None or connection.closed.is_set():
                        absent.append(
                            (client_id, Failure(client_id, "not connected", "disconnected"))
                        )
                        continue
                    message_id = next(self._ids)
                    self._awaited[message_id] = _Awaited(
                        connection, client_id, message_id, instruction, sink
                    )
                    expected += 1
                connection.send(encoded[key].frames("instruction", message_id))
            yield from absent
            deadline = None if timeout is None else time.monotonic() + timeout
            while expected:
                wait = None if deadline is None else deadline - time.monotonic()
                try:
                    if wait is not None and wait <= 0:
                        raise queue.Empty
                    client_id, outcome, slot = sink.get(timeout=wait)
                except queue.Empty:
                    break
                expected -= 1
                if slot is not None:
                    slot.release()
                yield client_id, outcome
            if expected:
                late = self._forget(sink)
                # Results completed just before the deadline are in the sink already: use them.
                while True:
                    try:
                        client_id, outcome, slot = sink.get_nowait()
                    except queue.Empty:
                        break
                    if slot is not None:
                        slot.release()
                    yield client_id, outcome
                for awaited in late:
                    self._stop_upload(awaited)
                    yield (
                        awaited.client_id,
                        Failure(
                            awaited.client_id,
                            f"no result within the round timeout of {timeout:g} s",
                            "timeout",
                        ),
                    )
        finally:
            self._forget(sink)
            while True:  # a consumer that stopped early leaves results behind: free their slots
                try:
                    _, _, slot = sink.get_nowait()
                except queue.Empty:
                    break
                if slot is not None:
                    slot.release()

    def close(self, grace: float = 5.0) -> None:
        """Tell every client the run is over, give them `grace` seconds to hang up, then stop."""
        with self._changed:
            if self._closing:
                return
            self._closing = True
            connections = list(self._connections)
            self._changed.notify_all()
        run_end = wire.frame_bytes(run_end=pb.RunEnd(reason="the run is over"))
        for connection in connections:
            connection.end([run_end])
        deadline = time.monotonic() + grace
        with self._changed:
            while self._connections and time.monotonic() < deadline:
                self._changed.wait(0.05)
        self._server.stop(grace=1.0).wait()
        log.info("roost server stopped")

    def __enter__(self) -> GrpcServerTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connected(self) -> list[ClientId]:
        """Ids of the clients connected now, sorted."""
        with self._lock:
            return sorted(self._clients)

    # -- bookkeeping --------------------------------------------------------------------------

    def _stop_upload(self, awaited: _Awaited) -> None:
        """Close a timed-out client still sending its result: it holds an upload slot."""
        assembly = awaited.connection.assembly
        if (
            assembly is not None
            and assembly.keep
            and assembly.header.message_id == awaited.message_id
        ):
            reason = "still sending its result when the round timed out"
            log.warning("closing the connection of %s: %s", awaited.connection.name, reason)
            awaited.connection.end([], (grpc.StatusCode.DEADLINE_EXCEEDED, reason))

    def _forget(self, sink: queue.Queue) -> list[_Awaited]:
        """Stop awaiting every instruction of one `run`; late answers will be dropped as stale."""
        with self._lock:
            ids = [mid for mid, awaited in self._awaited.items() if awaited.sink is sink]
            return [self._awaited.pop(mid) for mid in ids]

    def _take(self, connection: _Connection, message_id: int) -> _Awaited | None:
        """The awaited instruction `message_id` if this connection may answer it (lock held)."""
        awaited = self._awaited.get(message_id)
        return awaited if awaited is not None and awaited.connection is connection else None

    def _deliver(
        self,
        connection: _Connection,
        message_id: int,
        outcome: Result | Failure,
        slot: _Slot | None = None,
    ) -> bool:
        """Hand an outcome to the waiting round; False if nobody awaits it any more."""
        with self._lock:
            awaited = self._take(connection, message_id)
            if awaited is None:
                return False
            del self._awaited[message_id]
            # Under the lock, so that a round that times out sees either the outcome or the wait.
            awaited.sink.put((awaited.client_id, outcome, slot))
            return True

    def _drop(self, connection: _Connection, reason: str, kind: str = "disconnected") -> None:
        """Forget a connection; every instruction it still owed becomes a failure."""
        connection.end()
        with self._changed:
            if connection not in self._connections:
                return
            self._connections.discard(connection)
            registered = (
                connection.node_id is not None
                and self._clients.get(connection.node_id) is connection
            )
            if registered:
                del self._clients[connection.node_id]
            owed = [
                mid for mid, awaited in self._awaited.items() if awaited.connection is connection
            ]
            for mid in owed:
                awaited = self._awaited.pop(mid)
                awaited.sink.put(
                    (awaited.client_id, Failure(awaited.client_id, reason, kind), None)
                )
            remaining = sorted(self._clients)
            self._changed.notify_all()
        connection.release_slot()
        if registered and not self._closing:
            log.warning(
                "%s disconnected: %s (%d connected%s)",
                connection.name,
                reason,
                len(remaining),
                f": {', '.join(remaining)}" if remaining else "",
            )

    # -- the stream ---------------------------------------------------------------------------

    def _join(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        token_node = self._store.identify(context.invocation_metadata()) if self._store else None
        connection = _Connection(context.peer(), token_node)
        with self._lock:
            closing = self._closing
            if not closing:
                self._connections.add(connection)
        if closing:
            yield wire.frame_bytes(run_end=pb.RunEnd(reason="the run is over"))
            return
        context.add_callback(lambda: self._drop(connection, "the connection closed"))
        threading.Thread(
            target=self._read, args=(connection, requests), name="roost-grpc-reader", daemon=True
        ).start()
        timer = threading.Timer(self.hello_timeout, self._hello_overdue, args=(connection,))
        timer.daemon = True
        timer.start()
        try:
            while True:
                frames = connection.outbox.get()
                if frames is _CLOSE:
                    break
                yield from frames
        finally:
            timer.cancel()
        if connection.status is not None:
            context.set_code(connection.status[0])
            context.set_details(connection.status[1])

    def _hello_overdue(self, connection: _Connection) -> None:
        if connection.node_id is None and not connection.closed.is_set():
            reason = f"no hello within {self.hello_timeout:g} s"
            log.warning("closing the connection of %s: %s", connection.name, reason)
            connection.end(
                [wire.frame_bytes(refusal=pb.Refusal(reason=reason))],
                (grpc.StatusCode.DEADLINE_EXCEEDED, reason),
            )

    def _read(self, connection: _Connection, requests: Iterator[bytes]) -> None:
        reason, kind = "the connection closed", "disconnected"
        try:
            for raw in requests:
                if connection.closed.is_set():
                    break
                data = wire.chunk_data(raw)
                if data is not None:
                    self._on_chunk(connection, data)
                else:
                    self._on_frame(connection, wire.parse_frame(raw))
        except _Refused as refusal:
            reason = f"refused: {refusal}"
            log.warning("refused %s: %s", connection.name, refusal)
            connection.end(
                [wire.frame_bytes(refusal=pb.Refusal(reason=str(refusal)))],
                (grpc.StatusCode.PERMISSION_DENIED, str(refusal)),
            )
        except InvalidMessageError as error:
            reason, kind = f"protocol error: {error}", "invalid"
            log.warning("closing the connection of %s: %s", connection.name, error)
            connection.end(
                [wire.frame_bytes(refusal=pb.Refusal(reason=f"protocol error: {error}"))],
                (grpc.StatusCode.INVALID_ARGUMENT, str(error)),
            )
        except grpc.RpcError:
            pass  # the client went away; _drop says so
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("unexpected error on the connection of %s", connection.name)
            reason = "internal server error"
            connection.end([], (grpc.StatusCode.INTERNAL, reason))
        finally:
            self._drop(connection, reason, kind)

    def _on_frame(self, connection: _Connection, frame: pb.Frame) -> None:
        body = frame.WhichOneof("body")
        if connection.assembly is not None and body != "chunk":
            raise InvalidMessageError(f"a {body} frame arrived in the middle of a result's chunks")
        if connection.node_id is None and body != "hello":
            raise InvalidMessageError(f"the first frame must be a hello, not a {body} frame")
        if body == "hello":
            if connection.node_id is not None:
                raise InvalidMessageError("a second hello on the same connection")
            self._on_hello(connection, frame.hello)
        elif body == "result":
            self._on_result_header(connection, frame.result)
        elif body == "chunk":
            self._on_chunk(connection, frame.chunk.data)
        elif body == "client_error":
            error = frame.client_error
            client_id = connection.node_id
            failure = Failure(client_id, f"the client reported: {error.reason[:500]}", "error")
            if not self._deliver(connection, error.message_id, failure):
                log.info(
                    "%s reported an error for a stale instruction: %s",
                    connection.name,
                    error.reason[:200],
                )
        else:
            raise InvalidMessageError(f"clients do not send {body} frames")

    def _on_chunk(self, connection: _Connection, data: bytes | memoryview) -> None:
        if connection.node_id is None or connection.assembly is None:
            raise InvalidMessageError("a chunk frame outside of any result")
        connection.assembly.add(data)
        if connection.assembly.complete:
            self._on_result_complete(connection)

    def _on_hello(self, connection: _Connection, hello: pb.Hello) -> None:
        if hello.protocol_version != wire.PROTOCOL_VERSION:
            raise _Refused(
                f"the client speaks protocol version {hello.protocol_version}, this server "
                f"speaks {wire.PROTOCOL_VERSION}; install the same roost version on both sides"
            )
        try:
            node_id = check_node_id(hello.node_id)
        except ConfigurationError as error:
            raise _Refused(str(error)) from None
        if connection.token_node is not None and node_id != connection.token_node:
            raise _Refused(
                f"this token was issued for node {connection.token_node!r}, not {node_id!r}"
            )
        with self._changed:
            if self._closing:
                connection.end([wire.frame_bytes(run_end=pb.RunEnd(reason="the run is over"))])
                return
            previous = self._clients.get(node_id)
            connection.node_id = node_id
            self._clients[node_id] = connection
            connected = sorted(self._clients)
            self._changed.notify_all()
        if previous is not None:
            # The same node connecting again means its old connection is dead, even if the
            # network has not said so yet.
            self._drop(previous, "replaced by a new connection of the same node")
        log.info(
            "client %s connected from %s (%d connected: %s)",
            node_id,
            connection.peer,
            len(connected),
            ", ".join(connected),
        )
        connection.send(
            [
                wire.frame_bytes(
                    welcome=pb.Welcome(protocol_version=wire.PROTOCOL_VERSION, node_id=node_id)
                )
            ]
        )

    def _on_result_header(self, connection: _Connection, header: pb.Header) -> None:
        layout = wire.check_specs(header.arrays, self.max_message_bytes)
        with self._lock:
            awaited = self._take(connection, header.message_id)
        problem = None
        if awaited is None:
            problem = (
                f"result for instruction {header.message_id}, which is not awaited from this "
                "client (its round timed out or ended, or it was answered already)"
            )
            log.warning("dropped a stale result from %s: %s", connection.name, problem)
            connection.send(_rejection(header.message_id, problem))
        else:
            try:
                self._check_header(awaited.instruction, header, layout)
            except InvalidMessageError as error:
                problem = str(error)
                self._deliver(
                    connection, header.message_id, Failure(awaited.client_id, problem, "invalid")
                )
                connection.send(_rejection(header.message_id, problem))
        keep = problem is None
        if keep and layout.total_bytes:
            while not self._uploads.acquire(timeout=0.5):
                if connection.closed.is_set():
                    return
            connection.slot = _Slot(self._uploads)
        try:
            connection.assembly = wire.Assembly(header, layout, keep=keep)
        except InvalidMessageError:
            connection.release_slot()
            raise
        if connection.assembly.complete:
            self._on_result_complete(connection)

    @staticmethod
    def _check_header(instruction: Instruction, header: pb.Header, layout: wire.Layout) -> None:
        expected = wire.kind_of(instruction)
        if header.kind != expected:
            raise InvalidMessageError(
                f"a {wire.kind_name(header.kind)} result answers a "
                f"{wire.kind_name(expected)} instruction"
            )
        if isinstance(instruction, FitIns):
            wire.check_layout_matches(layout, instruction.parameters)
        elif isinstance(instruction, EvaluateIns) and layout.shapes:
            raise InvalidMessageError("an evaluate result carries no arrays")
        wire.decode_values(header.values, "metrics")

    def _on_result_complete(self, connection: _Connection) -> None:
        assembly, slot = connection.assembly, connection.slot
        connection.assembly, connection.slot = None, None
        assert assembly is not None
        if not assembly.keep:
            return  # a stale or rejected result: its chunks were read only to keep the framing
        message_id = assembly.header.message_id
        with self._lock:
            awaited = self._take(connection, message_id)
        if awaited is None:
            if slot is not None:
                slot.release()
            reason = f"result for instruction {message_id} arrived after its round stopped waiting"
            log.warning("dropped a stale result from %s: %s", connection.name, reason)
            connection.send(_rejection(message_id, reason))
            return
        try:
            result: Result | Failure = wire.decode_result(assembly.header, assembly.arrays())
        except InvalidMessageError as error:
            result = Failure(awaited.client_id, str(error), "invalid")
        template = (
            awaited.instruction.parameters if isinstance(awaited.instruction, FitIns) else None
        )
        outcome = validate_result(awaited.client_id, awaited.instruction, result, template)
        if isinstance(outcome, Failure):
            if slot is not None:
                slot.release()
                slot = None
            connection.send(_rejection(message_id, outcome.reason))
        if not self._deliver(connection, message_id, outcome, slot):
            if slot is not None:
                slot.release()
            log.warning(
                "dropped a result from %s that arrived after its round's deadline", connection.name
            )
