"""One client stream on the server: the frames that come in, and the frames that go out.

`StreamHandler` is the server's `Join` method. For each stream it registers a connection, starts
a reader thread that feeds the received frames to a `Session`, and sends whatever the connection's
outbox holds until the connection ends.

A `Session` handles frames by kind (hello, result header, chunk, client error). What it checks
before a result reaches the round (which then validates it again, as for every transport): the
stream's framing, the declared sizes (against `max_message_bytes`, before allocating anything),
that the result answers an instruction this connection is still awaited for (results of
timed-out or earlier rounds, replays and answers to other clients' instructions are dropped), and
that its arrays have the global model's shapes and dtypes. A client is told why its result was
rejected; a client that breaks the protocol is disconnected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from roost.core.types import EvaluateIns, Failure, FitIns, Instruction, Result
from roost.core.validation import validate_result
from roost.errors import InvalidMessageError
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire
from roost.transport.grpc.registry import Connection, Refused, Registry
from roost.transport.grpc.stream import dispatch_frame
from roost.transport.grpc.uploads import Slot, Upload, UploadSlots

log = logging.getLogger(__name__)

RUN_END = wire.frame_bytes(run_end=pb.RunEnd(reason="the run is over"))
_FRAME_KINDS = tuple(field.name for field in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields)


def rejection(message_id: int, reason: str) -> list[bytes]:
    """The frames telling a client that its result `message_id` was not accepted."""
    return [wire.frame_bytes(rejection=pb.Rejection(message_id=message_id, reason=reason))]


@dataclass(frozen=True)
class SessionSettings:
    """The limits every client stream is served with."""

    max_message_bytes: int
    hello_timeout: float


class StreamHandler:
    """The server's `Join` method: serves each client stream with its own `Session`."""

    def __init__(self, registry: Registry, slots: UploadSlots, settings: SessionSettings) -> None:
        self._registry = registry
        self._slots = slots
        self._settings = settings

    def __call__(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        connection = self._registry.connect(context.peer(), context.invocation_metadata())
        if connection is None:
            yield RUN_END
            return
        context.add_callback(lambda: self._registry.drop(connection, "the connection closed"))
        session = Session(connection, self._registry, self._slots, self._settings)
        threading.Thread(
            target=session.read, args=(requests,), name="roost-grpc-reader", daemon=True
        ).start()
        timer = threading.Timer(self._settings.hello_timeout, session.hello_overdue)
        timer.daemon = True
        timer.start()
        try:
            while (frames := connection.outbox.get()) is not None:
                yield from frames
        finally:
            timer.cancel()
        if connection.status is not None:
            context.set_code(connection.status[0])
            context.set_details(connection.status[1])


class Session:
    """The frames one client sends, handled by kind; `read` runs on the stream's reader thread."""

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
        self._handlers = {
            "hello": self._on_hello,
            "result": self._on_result,
            "client_error": self._on_client_error,
        }
        self._before_hello = {kind: self._hello_first for kind in _FRAME_KINDS}
        self._before_hello["hello"] = self._on_hello

    def read(self, requests: Iterator[bytes]) -> None:
        """Handle every frame the client sends; drop the connection when the stream ends."""
        connection = self.connection
        reason, kind = "the connection closed", "disconnected"
        try:
            for raw in requests:
                if connection.closed.is_set():
                    break
                dispatch_frame(
                    raw,
                    self._handlers if connection.node_id is not None else self._before_hello,
                    self._on_chunk,
                    assembling="a result" if connection.upload is not None else None,
                    sender="clients",
                )
        except Refused as refusal:
            reason = f"refused: {refusal}"
            log.warning("refused %s: %s", connection.name, refusal)
            self._refuse(str(refusal), grpc.StatusCode.PERMISSION_DENIED, str(refusal))
        except InvalidMessageError as error:
            reason, kind = f"protocol error: {error}", "invalid"
            log.warning("closing the connection of %s: %s", connection.name, error)
            self._refuse(f"protocol error: {error}", grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except grpc.RpcError:
            pass  # the client went away; dropping the connection says so
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("unexpected error on the connection of %s", connection.name)
            reason = "internal server error"
            connection.end([], (grpc.StatusCode.INTERNAL, reason))
        finally:
            self._registry.drop(connection, reason, kind)

    def hello_overdue(self) -> None:
        """Close a connection that has not said hello in time."""
        connection = self.connection
        if connection.node_id is None and not connection.closed.is_set():
            reason = f"no hello within {self._settings.hello_timeout:g} s"
            log.warning("closing the connection of %s: %s", connection.name, reason)
            self._refuse(reason, grpc.StatusCode.DEADLINE_EXCEEDED, reason)

    def _refuse(self, told: str, code: grpc.StatusCode, details: str) -> None:
        self.connection.end([wire.frame_bytes(refusal=pb.Refusal(reason=told))], (code, details))

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
        welcome = pb.Welcome(protocol_version=wire.PROTOCOL_VERSION, node_id=hello.node_id)
        self.connection.send([wire.frame_bytes(welcome=welcome)])

    def _on_client_error(self, frame: pb.Frame) -> None:
        error = frame.client_error
        failure = Failure(
            self.connection.node_id, f"the client reported: {error.reason[:500]}", "error"
        )
        if not self._registry.deliver(self.connection, error.message_id, failure):
            log.info(
                "%s reported an error for a stale instruction: %s",
                self.connection.name,
                error.reason[:200],
            )

    def _on_result(self, frame: pb.Frame) -> None:
        header = frame.result
        layout = wire.check_specs(header.arrays, self._settings.max_message_bytes)
        keep = self._accept(header, layout)
        slot = None
        if keep and layout.total_bytes:
            slot = self._wait_for_slot(header.message_id)
            if slot is None:
                if self.connection.closed.is_set():
                    return
                keep = False
                self._reject_stale(
                    header.message_id,
                    f"result for instruction {header.message_id}, which is not awaited from "
                    "this client any more (its round stopped waiting while it waited to upload)",
                )
        upload = Upload(header, layout, keep=keep, slot=slot)
        if self.connection.start_upload(upload) and upload.complete:
            self._finish_result()

    def _on_chunk(self, data: bytes | memoryview) -> None:
        upload = self.connection.upload
        if self.connection.node_id is None or upload is None:
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
            self._reject_stale(
                message_id,
                f"result for instruction {message_id}, which is not awaited from this client "
                "(its round timed out or ended, or it was answered already)",
            )
            return False
        try:
            _check_header(awaited.instruction, header, layout)
        except InvalidMessageError as error:
            failure = Failure(awaited.client_id, str(error), "invalid")
            self._registry.deliver(self.connection, message_id, failure)
            self.connection.send(rejection(message_id, str(error)))
            return False
        return True

    def _wait_for_slot(self, message_id: int) -> Slot | None:
        """An upload slot; None once the connection ended or nobody awaits the result."""

        def give_up() -> bool:
            return self.connection.closed.is_set() or not self._registry.awaits(
                self.connection, message_id
            )

        return self._slots.acquire(give_up)

    def _reject_stale(self, message_id: int, reason: str) -> None:
        log.warning("dropped a stale result from %s: %s", self.connection.name, reason)
        self.connection.send(rejection(message_id, reason))

    def _finish_result(self) -> None:
        upload = self.connection.finish_upload()
        if upload is None or not upload.keep:
            return  # a stale or rejected result: its chunks were read only to keep the framing
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
            self._reject_stale(
                message_id,
                f"result for instruction {message_id} arrived after its round stopped waiting",
            )
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
