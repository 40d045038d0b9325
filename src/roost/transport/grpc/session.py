"""One client stream on the server: the frames that come in, and the frames that go out.

`StreamHandler` is the server's `Join` method, served on the server's event loop. For each stream
it registers a connection, starts a reader coroutine that feeds the received frames to a
`Session`, and sends whatever the connection's outbox holds until the connection ends.

A `Session` handles frames by kind (hello, result header, chunk, client error). What it checks
before a result reaches the round (which then validates it again, as for every transport): the
stream's framing, the declared sizes (against `max_message_bytes`, before allocating anything),
that the result answers an instruction this connection is still awaited for (results of
timed-out or earlier rounds, replays and answers to other clients' instructions are dropped), and
that its arrays have the global model's shapes and dtypes. A client is told why its result was
rejected; a client that breaks the protocol, or sends more stale results than an honest client
could (see `Conduct`), is disconnected.

A result with chunks is received in two steps: its header is checked, then the session waits for
an upload slot and grants the upload, and only then does the client send the chunks. The reader
keeps reading meanwhile, so a client that leaves while it waits is noticed at once, and one that
sends chunks before its grant is disconnected: no client's chunks wait in the server's buffers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from roost.core.types import EvaluateIns, Failure, FitIns, Instruction, Result
from roost.core.validation import validate_result
from roost.errors import InvalidMessageError
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.conduct import Conduct
from roost.transport.grpc.registry import Connection, Refused, Registry
from roost.transport.grpc.security import certificate_node
from roost.transport.grpc.stream import dispatch_frame
from roost.transport.grpc.uploads import Slot, Upload, UploadSlots

log = logging.getLogger(__name__)

RUN_END = frames.frame_bytes(run_end=pb.Farewell(reason="the run is over"))
# The status a stream ends with when the server stops before the run is over (it failed, or
# its operator stopped it): clients keep reconnecting, so a resumed server finds them again.
SERVER_STOPPED = (
    grpc.StatusCode.UNAVAILABLE,
    "the server stopped before the end of the run; reconnect to continue it",
)
_SMALL_SEND_BYTES = 4096  # frames sent without a send slot (see `StreamHandler._write`)
_FRAME_KINDS = tuple(field.name for field in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields)


def rejection(message_id: int, reason: str) -> list[bytes]:
    """The frames telling a client that its result `message_id` was not accepted."""
    return [frames.frame_bytes(rejection=pb.MessageFailure(message_id=message_id, reason=reason))]


@dataclass(frozen=True)
class SessionSettings:
    """The limits every client stream is served with."""

    max_message_bytes: int
    hello_timeout: float
    # Stale results or errors tolerated beyond one per instruction sent (see `Conduct`).
    violation_allowance: int = 32
    # Messages sent at once, over all clients: gRPC holds a copy of each frame being sent, so
    # this (times the chunk size) bounds that memory however many clients are sent a model.
    concurrent_sends: int = 64
    # Seconds one frame may wait for its client to take it (None: no limit); a client that
    # stops reading must not hold a send slot for ever.
    send_timeout: float | None = 60.0


class StreamHandler:
    """The server's `Join` method: serves each client stream with its own `Session`.

    It runs on the server's event loop: a connected client costs a few objects and two
    coroutines (this one, which sends, and its session's reader), not threads.
    """

    def __init__(self, registry: Registry, slots: UploadSlots, settings: SessionSettings) -> None:
        self._registry = registry
        self._slots = slots
        self._settings = settings
        self._sends: asyncio.Semaphore | None = None  # made on the server's loop

    async def serve(self, requests: object, context: grpc.aio.ServicerContext) -> None:
        """Serve one client stream until it ends."""
        connection = self._registry.connect(
            context.peer(), context.invocation_metadata(), certificate_node(context)
        )
        if connection is None:
            await context.write(RUN_END)
            return
        session = Session(connection, self._registry, self._slots, self._settings)
        reader = asyncio.create_task(session.read(context))
        timer = asyncio.get_running_loop().call_later(
            self._settings.hello_timeout, session.hello_overdue
        )
        try:
            while (frames := await connection.outbox.get()) is not None:
                await self._write(context, frames)
        except (grpc.RpcError, grpc.aio.UsageError, ConnectionError):
            pass  # the client went away while we wrote; dropping the connection says so
        except TimeoutError:
            reason = f"took no frame sent to it for {self._settings.send_timeout:g} s"
            log.warning("closing the connection of %s: %s", connection.name, reason)
            connection.end([], (grpc.StatusCode.DEADLINE_EXCEEDED, reason))
            self._registry.drop(connection, reason, "timeout")
        finally:
            timer.cancel()
            reader.cancel()
            self._registry.drop(connection, "the connection closed")
        if connection.status is not None:
            context.set_code(connection.status[0])
            context.set_details(connection.status[1])

    async def _write(self, context: grpc.aio.ServicerContext, frames: Iterable[bytes]) -> None:
        """Write one message's frames, holding one of the server's send slots meanwhile.

        A few small frames (a welcome, a grant, a rejection) need no send slot: the slots bound
        the memory of large sends, and a client's upload grant must not wait behind the models
        of a whole cohort.
        """
        if isinstance(frames, list) and sum(map(len, frames)) <= _SMALL_SEND_BYTES:
            await self._write_frames(context, frames)
            return
        if self._sends is None:
            self._sends = asyncio.Semaphore(self._settings.concurrent_sends)
        async with self._sends:
            await self._write_frames(context, frames)

    async def _write_frames(
        self, context: grpc.aio.ServicerContext, frames: Iterable[bytes]
    ) -> None:
        for frame in frames:
            await asyncio.wait_for(context.write(frame), self._settings.send_timeout)


class Session:
    """The frames one client sends, handled by kind; `read` is the stream's reader coroutine."""

    def __init__(
        self,
        connection: Connection,
        registry: Registry,
        slots: UploadSlots,
        settings: SessionSettings,
    ) -> None:
        self.connection = connection
        self._registry = registry
        self._slots = slots
        self._settings = settings
        self.conduct = Conduct(connection.name, settings.violation_allowance)
        self._handlers = {
            "hello": self._on_hello,
            "result": self._on_result,
            "client_error": self._on_client_error,
        }
        self._before_hello = {kind: self._hello_first for kind in _FRAME_KINDS}
        self._before_hello["hello"] = self._on_hello
        # The wait for an upload slot of the result whose header came last, until it is granted.
        self._granting: asyncio.Task[None] | None = None

    async def read(self, context: grpc.aio.ServicerContext) -> None:
        """Handle every frame the client sends; drop the connection when the stream ends."""
        connection = self.connection
        reason, kind = "the connection closed", "disconnected"
        try:
            while not connection.closed.is_set() and await self._next_frame(context):
                pass
        except Refused as refusal:
            reason = f"refused: {refusal}"
            self._registry.hello_refusals.add(f"of {connection.name}: {refusal}")
            self._refuse(str(refusal), grpc.StatusCode.PERMISSION_DENIED, str(refusal))
        except InvalidMessageError as error:
            reason, kind = f"protocol error: {error}", "invalid"
            log.warning("closing the connection of %s: %s", connection.name, error)
            self._refuse(f"protocol error: {error}", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except (grpc.RpcError, grpc.aio.UsageError, ConnectionError):
            pass  # the client went away; dropping the connection says so
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("unexpected error on the connection of %s", connection.name)
            reason = "internal server error"
            connection.end([], (grpc.StatusCode.INTERNAL, reason))
        finally:
            if self._granting is not None:
                # It holds no slot yet: one is taken only together with the grant.
                self._granting.cancel()
            self.conduct.flush()
            self._registry.drop(connection, reason, kind)

    async def _next_frame(self, context: grpc.aio.ServicerContext) -> bool:
        """Read one frame and hand it to its handler; False once the client's stream has ended.

        The frame lives in this call only: a reader waiting for the next frame must not keep
        the last one, or every connection holds a chunk (up to a model's size) between rounds.
        """
        raw = await context.read()
        connection = self.connection
        if raw is grpc.aio.EOF or connection.closed.is_set():
            return False
        in_result = connection.upload is not None or self._granting is not None
        dispatch_frame(
            raw,
            self._handlers if connection.node_id is not None else self._before_hello,
            self._on_chunk,
            assembling="a result" if in_result else None,
            sender="clients",
        )
        return True

    def hello_overdue(self) -> None:
        """Close a connection that has not said hello in time."""
        connection = self.connection
        if connection.node_id is None and not connection.closed.is_set():
            reason = f"no hello within {self._settings.hello_timeout:g} s"
            log.warning("closing the connection of %s: %s", connection.name, reason)
            self._refuse(reason, grpc.StatusCode.DEADLINE_EXCEEDED, reason)

    def _refuse(self, told: str, code: grpc.StatusCode, details: str) -> None:
        self.connection.end([frames.frame_bytes(refusal=pb.Farewell(reason=told))], (code, details))

    # -- frames -------------------------------------------------------------------------------

    def _hello_first(self, frame: pb.Frame) -> None:
        body = frame.WhichOneof("body")
        raise InvalidMessageError(f"the first frame must be a hello, not a {body} frame")

    def _on_hello(self, frame: pb.Frame) -> None:
        hello = frame.hello
        if self.connection.node_id is not None:
            raise InvalidMessageError("a second hello on the same connection")
        if hello.protocol_version != wire.PROTOCOL_VERSION:
            raise Refused(
                f"the client speaks protocol version {hello.protocol_version}, this server "
                f"speaks {wire.PROTOCOL_VERSION}; install the same roost version on both sides"
            )
        if not self._registry.admit(self.connection, hello.node_id):
            self.connection.end([RUN_END])
            return
        self.conduct.name = self.connection.name
        welcome = pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id=hello.node_id)
        self.connection.send([frames.frame_bytes(welcome=welcome)])

    def _on_client_error(self, frame: pb.Frame) -> None:
        error = frame.client_error
        failure = Failure(
            self.connection.node_id, f"the client reported: {error.reason[:500]}", "error"
        )
        if not self._registry.deliver(self.connection, error.message_id, failure):
            self._violation(f"an error report for instruction {error.message_id}, not awaited")

    def _on_result(self, frame: pb.Frame) -> None:
        header = frame.result
        layout = wire.check_specs(header.arrays, self._settings.max_message_bytes)
        wire.check_chunk_count(header, layout)
        if not self._accept(header, layout):
            return  # rejected, and the client told so: it sends no chunk of this result
        if not layout.total_bytes:
            # Complete with its header: no slot, no grant.
            if self.connection.start_upload(Upload(header, layout, slot=None)):
                self._finish_result()
            return
        self._granting = asyncio.create_task(self._grant_upload(header, layout))

    def _on_chunk(self, data: bytes | memoryview) -> None:
        upload = self.connection.upload
        if self.connection.node_id is None or upload is None:
            if self._granting is not None:
                raise InvalidMessageError(
                    "a chunk frame before the server granted the result's upload; a client "
                    "sends a result's chunks only after its upload grant"
                )
            raise InvalidMessageError("a chunk frame outside of any result")
        upload.add(data)
        if upload.complete:
            self._finish_result()

    # -- results ------------------------------------------------------------------------------

    def _accept(self, header: pb.Header, layout: wire.Layout) -> bool:
        """Whether to receive a result: it answers an awaited instruction and matches it."""
        message_id = header.message_id
        awaited = self._registry.awaited_from(self.connection, message_id)
        if awaited is None:
            reason = (
                f"result for instruction {message_id}, which is not awaited from this client "
                "(its round timed out or ended, or it was answered already)"
            )
            self.connection.send(rejection(message_id, reason))
            self._violation(reason)
            return False
        try:
            _check_header(awaited.instruction, header, layout)
        except InvalidMessageError as error:
            failure = Failure(awaited.client_id, str(error), "invalid")
            self._registry.deliver(self.connection, message_id, failure)
            self.connection.send(rejection(message_id, str(error)))
            return False
        return True

    async def _grant_upload(self, header: pb.Header, layout: wire.Layout) -> None:
        """Wait for an upload slot, then grant the client the upload of its result's chunks.

        A client waiting here is not idle through its own fault: the upload idle timeout
        starts with the grant. If its round stops waiting first, it is told so (not a violation:
        the server made it wait), and the result ends with its header.
        """
        connection, message_id = self.connection, header.message_id
        try:
            slot = await self._wait_for_slot(message_id)
            if slot is None:
                if not connection.closed.is_set():
                    reason = (
                        f"result for instruction {message_id}, which is not awaited from this "
                        "client any more (its round stopped waiting while it waited to upload)"
                    )
                    connection.send(rejection(message_id, reason))
                return
            # No await from here on: the slot is the connection's before anything can cancel.
            if connection.start_upload(Upload(header, layout, slot)):
                grant = pb.UploadGrant(message_id=message_id)
                connection.send([frames.frame_bytes(grant=grant)])
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("unexpected error granting an upload to %s", connection.name)
            connection.end([], (grpc.StatusCode.INTERNAL, "internal server error"))
            self._registry.drop(connection, "internal server error")
        finally:
            self._granting = None

    async def _wait_for_slot(self, message_id: int) -> Slot | None:
        """An upload slot; None once the connection ended or nobody awaits the result."""

        def give_up() -> bool:
            return self.connection.closed.is_set() or not self._registry.awaits(
                self.connection, message_id
            )

        return await self._slots.acquire(give_up)

    def _violation(self, reason: str) -> None:
        """Count a stale message; past the client's budget, end its connection."""
        sent = self.connection.instructions_sent
        if self.conduct.violation(reason, sent):
            raise InvalidMessageError(self.conduct.budget_exceeded_reason(sent))

    def _finish_result(self) -> None:
        upload = self.connection.finish_upload()
        if upload is None:
            return
        slot = upload.take_slot()
        handed_over = False
        try:
            handed_over = self._hand_over(upload, slot)
        finally:
            if slot is not None and not handed_over:
                slot.release()

    def _hand_over(self, upload: Upload, slot: Slot | None) -> bool:
        """Validate a received result and give it to its round; True if `slot` went with it."""
        message_id = upload.message_id
        awaited = self._registry.awaited_from(self.connection, message_id)
        if awaited is None:
            reason = f"result for instruction {message_id} arrived after its round stopped waiting"
            log.info("dropped a late result from %s: %s", self.connection.name, reason)
            self.connection.send(rejection(message_id, reason))
            return False
        try:
            result: Result | Failure = wire.decode_result(
                upload.assembly.header, upload.assembly.arrays()
            )
        except InvalidMessageError as error:
            result = Failure(awaited.client_id, str(error), "invalid")
        instruction = awaited.instruction
        template = instruction.parameters if isinstance(instruction, FitIns) else None
        outcome = validate_result(awaited.client_id, instruction, result, template)
        if isinstance(outcome, Failure):
            self.connection.send(rejection(message_id, outcome.reason))
            self._registry.deliver(self.connection, message_id, outcome)
            return False
        if self._registry.deliver(self.connection, message_id, outcome, slot):
            return True
        log.warning(
            "dropped a result from %s that arrived after its round's deadline",
            self.connection.name,
        )
        return False


def _check_header(instruction: Instruction, header: pb.Header, layout: wire.Layout) -> None:
    """A result header must answer its instruction's kind, with the global model's arrays."""
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
