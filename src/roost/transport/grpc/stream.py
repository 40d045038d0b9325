"""What both ends of a `Join` stream share: gRPC options, the chunk size, and frame dispatch.

Both ends receive the same way: chunk frames (nearly all the bytes) are read in
place and go to the message being assembled; every other frame is parsed and looked up in a table
of `frame kind -> handler`. A kind missing from the table, or any frame other than a chunk in the
middle of a message's chunks, is a protocol error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from roost.errors import ConfigurationError, InvalidMessageError
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb

FrameHandler = Callable[[pb.Frame], None]
ChunkHandler = Callable[[bytes | memoryview], None]


def stream_options(keepalive_s: float) -> list[tuple[str, int]]:
    """gRPC options of both ends of a stream: frame size limits and keepalive pings."""
    keepalive_ms = int(keepalive_s * 1000)
    return [
        ("grpc.max_receive_message_length", wire.FRAME_LIMIT_BYTES),
        ("grpc.max_send_message_length", wire.FRAME_LIMIT_BYTES),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", max(keepalive_ms, 10_000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def check_chunk_bytes(chunk_bytes: int) -> None:
    """Array bytes per chunk frame must leave room in the frame for its framing."""
    if not 0 < chunk_bytes <= wire.FRAME_LIMIT_BYTES - 1024:
        raise ConfigurationError(
            f"chunk_bytes must be in (0, {wire.FRAME_LIMIT_BYTES - 1024}], got {chunk_bytes}"
        )


def dispatch_frame(
    raw: bytes,
    handlers: Mapping[str, FrameHandler],
    on_chunk: ChunkHandler,
    *,
    assembling: str | None,
    sender: str,
) -> None:
    """Handle one received frame.

    Args:
        raw: the frame as received.
        handlers: the handler of each frame kind (`Frame.body` field name) this side accepts.
        on_chunk: receives the data of chunk frames.
        assembling: what is being assembled ("a result", "an instruction"), if a message's
            chunks are still expected; no other frame may arrive until they have.
        sender: who sent the frame ("clients", "servers"), for errors.
    """
    data = frames.chunk_data(raw)
    if data is not None:
        on_chunk(data)
        return
    frame = frames.parse_frame(raw)
    body = frame.WhichOneof("body")
    if body == "chunk":
        on_chunk(frame.chunk.data)
        return
    if assembling is not None:
        raise InvalidMessageError(f"a {body} frame arrived in the middle of {assembling}'s chunks")
    handler = handlers.get(body)
    if handler is None:
        raise InvalidMessageError(f"{sender} do not send {body} frames")
    handler(frame)
