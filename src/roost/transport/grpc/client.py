"""The client side of deployment: connect, carry out instructions, reconnect, stop when told.

A client keeps one `Join` stream open to the server. It carries out instructions one at a time, in
the order they arrive, and sends each result back on the same stream: its header first, then,
once the server grants the upload (an upload slot is free), its chunks. When the connection is lost
(the server restarted, the network failed) it reconnects with exponential backoff; when the server
says the run is over it returns. A connection that fails the way a TLS mismatch fails is looked
into at once (`probe`): a mismatch is named and ends the client, as retrying cannot fix it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc

from roost.client.client import ClientLike, Context
from roost.client.protocols import execute
from roost.core.backoff import Backoff
from roost.core.types import Failure, FitIns, Instruction
from roost.core.validation import validate_result
from roost.errors import (
    ClientRefusedError,
    InvalidMessageError,
    ServerUnreachableError,
    TlsMismatchError,
)
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.options import ClientOptions
from roost.transport.grpc.probe import explain_tls_failure, looks_like_tls_failure
from roost.transport.grpc.security import (
    channel_credentials,
    check_node_id,
    read_pem,
    token_metadata,
)
from roost.transport.grpc.stream import dispatch_frame, stream_options

log = logging.getLogger(__name__)

# The reconnect jitter has a generator of its own: drawing from the `random` module would move the
# state a user's app seeded (keras.utils.set_random_seed seeds it) and so change their results.
_JITTER = random.Random()


class _Lost(Exception):
    """The connection ended without the server ending the run: try again."""

    def __init__(self, reason: str, welcomed: bool) -> None:
        super().__init__(reason)
        self.welcomed = welcomed


@dataclass(frozen=True)
class _Upload:
    """A result with chunks: its header frame goes out at once, its chunks once granted."""

    message_id: int
    header: bytes
    chunks: Iterable[bytes]


Outgoing = Iterable[bytes] | _Upload  # frames sent as they are, or a result to upload


class _Grants:
    """The server's answer to the result header sent last: a grant of its upload, or a rejection.

    The stream's sender waits here (gRPC's thread that reads the outgoing frames) while the
    receiver hands over what the server answered.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._expected: int | None = None
        self._granted: bool | None = None
        self._closed = False

    def expect(self, message_id: int) -> None:
        """The header of result `message_id` is about to go out: its answer is awaited."""
        with self._changed:
            self._expected, self._granted = message_id, None

    def answer(self, message_id: int, granted: bool) -> bool:
        """Hand over the server's answer; False if result `message_id` awaits none."""
        with self._changed:
            if message_id != self._expected:
                return False
            self._expected, self._granted = None, granted
            self._changed.notify_all()
            return True

    def wait(self) -> bool:
        """Wait for the answer to the expected result; True if its upload was granted."""
        with self._changed:
            self._changed.wait_for(lambda: self._granted is not None or self._closed)
            return bool(self._granted) and not self._closed

    def close(self) -> None:
        """The stream ended: nothing will be granted any more."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def _requests(outbox: queue.Queue[Outgoing | None], grants: _Grants) -> Iterator[bytes]:
    """The frames to send, in order; a result's chunks only once its upload is granted."""
    while (item := outbox.get()) is not None:
        if isinstance(item, _Upload):
            grants.expect(item.message_id)
            yield item.header
            if grants.wait():
                yield from item.chunks
            # Not granted (rejected): the result ends with its header.
        else:
            yield from item


def _gist(details: str | None) -> str:
    """What gRPC says of a failed connection, cut to its last error's own words.

    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to
    connect to remote host: Connection refused" becomes "Connection refused": the rest repeats
    the address the warning names already, and the line stays short enough to read at a glance.
    """
    if not details:
        return "no details"
    if "last error:" in details:
        return details.rsplit(": ", 1)[-1].strip() or details
    return details


def _client_error(message_id: int, reason: str) -> list[bytes]:
    return [
        frames.frame_bytes(client_error=pb.MessageFailure(message_id=message_id, reason=reason))
    ]


class GrpcClient:
    """Serve one client to a roost server until the server ends the run.

    Args:
        server_address: `host:port` of the server.
        make_client: returns the client object; called once, when the first instruction arrives.
        node_id: the name this client joins under (with tokens: the node id its token names).
        options: credentials, limits and reconnection (`ClientOptions`; default: its defaults,
            no TLS and no token).
        context: the node's `Context`, whose `state` client-side protocols keep between
            instructions (default: a fresh one for `node_id`).
    """

    def __init__(
        self,
        server_address: str,
        make_client: Callable[[], ClientLike],
        node_id: str,
        options: ClientOptions | None = None,
        *,
        context: Context | None = None,
    ) -> None:
        options = options if options is not None else ClientOptions()
        self.options = options
        self.server_address = server_address
        self.node_id = check_node_id(node_id)
        self._make_client = make_client
        self._client: ClientLike | None = None
        self._context = context or Context.for_partition(0, 1, node_id=self.node_id)
        # Read once: the channel's credentials and a TLS probe both use the PEM data.
        root_certificates, certificate = options.root_certificates, options.certificate
        self._root_certificates = (
            None if root_certificates is None else read_pem(root_certificates, "root certificate")
        )
        self._certificate = (
            None
            if certificate is None
            else (
                read_pem(certificate[0], "client certificate"),
                read_pem(certificate[1], "client private key"),
            )
        )
        self._credentials = (
            None
            if self._root_certificates is None
            else channel_credentials(self._root_certificates, self._certificate)
        )
        self._metadata = token_metadata(options.token) if options.token else ()
        self._stopped = threading.Event()
        self._call: grpc.Future | None = None
        self._channel_options = stream_options(options.keepalive_s)

    def run(self) -> None:
        """Serve until the server ends the run.

        Raises `ClientRefusedError` when the server refuses this client, `TlsMismatchError` at
        once when its TLS settings do not fit the server's, and `ServerUnreachableError` after
        `reconnect_timeout` seconds without a connection.
        """
        options = self.options
        backoff = Backoff(options.initial_backoff, options.max_backoff, rng=_JITTER)
        lost_since = time.monotonic()
        while not self._stopped.is_set():
            try:
                self._serve_once()
                return
            except _Lost as lost:
                if self._stopped.is_set():
                    return
                now = time.monotonic()
                if lost.welcomed:
                    lost_since = now
                    backoff.reset()
                delay = backoff.next_delay()
                attempts, waited = backoff.attempts, now - lost_since
                if options.reconnect_timeout is not None and waited >= options.reconnect_timeout:
                    raise ServerUnreachableError(
                        f"no connection to the server at {self.server_address} for "
                        f"{waited:.0f} s ({attempts} attempts; last error: {lost}); check the "
                        "address, that the server is running and, with TLS, the root "
                        "certificate"
                    ) from None
                if options.reconnect_timeout is not None:
                    delay = min(delay, options.reconnect_timeout - waited)
                log.warning("%s; attempt %d, retrying in %.1f s", lost, attempts, delay)
                self._stopped.wait(max(delay, 0.0))

    def stop(self) -> None:
        """Disconnect and make `run` return (from another thread), whatever the server does."""
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self.server_address, options=self._channel_options)
        return grpc.secure_channel(
            self.server_address, self._credentials, options=self._channel_options
        )

    def _serve_once(self) -> None:
        """One connection: serve it until the run ends (return) or the connection is lost."""
        stream = _Stream(
            self.server_address, self.node_id, self.options.max_message_bytes, self._carry_out
        )
        channel = self._channel()
        call = None
        try:
            # No serializers: frames are bytes, parsed here with roost's checks and errors.
            call = channel.stream_stream(wire.JOIN_METHOD)(
                _requests(stream.outbox, stream.grants), metadata=self._metadata
            )
            self._call = call
            if self._stopped.is_set():
                call.cancel()
            for raw in call:
                if stream.receive(raw):
                    return
            raise _Lost("the server closed the connection", stream.welcomed)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise ClientRefusedError(
                    f"the server refused this client's credentials ({details}); pass the token "
                    f"the server's operator issued for node {self.node_id!r}"
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE and not stream.welcomed:
                self._check_tls_fits(details)
            raise _Lost(
                f"connection to {self.server_address} failed: {code.name}: {_gist(details)}",
                stream.welcomed,
            ) from None
        finally:
            self._call = None
            stream.close()
            if call is not None:
                call.cancel()
            channel.close()

    def _check_tls_fits(self, details: str | None) -> None:
        """Raise `TlsMismatchError` if a failed connection failed for a TLS mismatch."""
        if not looks_like_tls_failure(details):
            return
        mismatch = explain_tls_failure(
            self.server_address, self._root_certificates, self._certificate
        )
        if mismatch is not None:
            raise TlsMismatchError(mismatch) from None

    def _carry_out(self, assembly: wire.Assembly) -> Outgoing:
        """Run one instruction on the client; what to send: its result (or an error report)."""
        message_id = assembly.header.message_id
        instruction: Instruction = wire.decode_instruction(assembly.header, assembly.arrays())
        kind = type(instruction).__name__
        started = time.perf_counter()
        try:
            if self._client is None:
                self._client = self._make_client()
            result = execute(self._client, instruction, self._context)
        except Exception as error:  # the user's code failed: tell the server, keep serving
            log.exception("%s (instruction %d) raised", kind, message_id)
            return _client_error(message_id, f"{type(error).__name__}: {error}")
        template = instruction.parameters if isinstance(instruction, FitIns) else None
        checked = validate_result(self.node_id, instruction, result, template)
        if isinstance(checked, Failure):
            log.error(
                "not sending the result of %s (instruction %d): %s",
                kind,
                message_id,
                checked.reason,
            )
            return _client_error(message_id, checked.reason)
        try:
            encoded = wire.encode_result(checked, self.options.chunk_bytes)
        except InvalidMessageError as error:
            log.error("cannot send the result of %s (instruction %d): %s", kind, message_id, error)
            return _client_error(message_id, str(error))
        log.info(
            "%s (instruction %d) done in %.2f s", kind, message_id, time.perf_counter() - started
        )
        if not encoded.header.num_chunks:
            return list(encoded.frames("result", message_id))
        header = wire.header_frame(encoded.header, "result", message_id)
        return _Upload(message_id, header, encoded.chunks)


class _Stream:
    """One connection's frames from the server, handled by kind; results go out via `outbox`."""

    def __init__(
        self,
        server_address: str,
        node_id: str,
        max_message_bytes: int,
        carry_out: Callable[[wire.Assembly], Outgoing],
    ) -> None:
        self._server_address = server_address
        self._node_id = node_id
        self._max_message_bytes = max_message_bytes
        self._carry_out = carry_out
        self.outbox: queue.Queue[Outgoing | None] = queue.Queue()
        self.grants = _Grants()
        hello = pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id=node_id)
        self.outbox.put([frames.frame_bytes(hello=hello)])
        self.welcomed = False
        self.run_over = False
        self._assembly: wire.Assembly | None = None
        self._handlers = {
            "welcome": self._on_welcome,
            "instruction": self._on_instruction,
            "grant": self._on_grant,
            "rejection": self._on_rejection,
            "refusal": self._on_refusal,
            "run_end": self._on_run_end,
        }

    def receive(self, raw: bytes) -> bool:
        """Handle one frame; True once the server has ended the run."""
        dispatch_frame(
            raw,
            self._handlers,
            self._on_chunk,
            assembling="an instruction" if self._assembly is not None else None,
            sender="servers",
        )
        return self.run_over

    def _on_welcome(self, frame: pb.Frame) -> None:
        self.welcomed = True
        log.info("connected to %s as node %s", self._server_address, self._node_id)

    def _on_instruction(self, frame: pb.Frame) -> None:
        header = frame.instruction
        layout = wire.check_specs(header.arrays, self._max_message_bytes)
        self._assembly = wire.Assembly(header, layout)
        self._carry_out_if_complete()

    def _on_chunk(self, data: bytes | memoryview) -> None:
        if self._assembly is None:
            raise InvalidMessageError("a chunk frame outside of any instruction")
        self._assembly.add(data)
        self._carry_out_if_complete()

    def _carry_out_if_complete(self) -> None:
        assembly = self._assembly
        if assembly is not None and assembly.complete:
            self._assembly = None
            self.outbox.put(self._carry_out(assembly))

    def _on_grant(self, frame: pb.Frame) -> None:
        message_id = frame.grant.message_id
        if not self.grants.answer(message_id, True):
            raise InvalidMessageError(
                f"the server granted the upload of result {message_id}, which this client "
                "is not waiting to upload"
            )

    def _on_rejection(self, frame: pb.Frame) -> None:
        message_id = frame.rejection.message_id
        log.error(
            "the server rejected the result of instruction %d: %s",
            message_id,
            frame.rejection.reason,
        )
        # A rejection of a result waiting for its grant: its chunks are not sent.
        self.grants.answer(message_id, False)

    def close(self) -> None:
        """The connection ended: the sender stops, whatever it was waiting for."""
        self.outbox.put(None)
        self.grants.close()

    def _on_refusal(self, frame: pb.Frame) -> None:
        raise ClientRefusedError(f"the server refused this client: {frame.refusal.reason}")

    def _on_run_end(self, frame: pb.Frame) -> None:
        log.info("the server ended the run (%s)", frame.run_end.reason or "done")
        self.run_over = True
