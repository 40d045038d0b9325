"""Route each received frame to the handler of its kind; shared by server and client streams.

Both ends of a stream receive the same way: chunk frames (nearly all the bytes) are read in
place and go to the message being assembled; every other frame is parsed and looked up in a table
of `frame kind -> handler`. A kind missing from the table, or any frame other than a chunk in the
middle of a message's chunks, is a protocol error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from roost.errors import InvalidMessageError
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire

FrameHandler = Callable[[pb.Frame], None]
ChunkHandler = Callable[[bytes | memoryview], None]


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
    data = wire.chunk_data(raw)
    if data is not None:
        on_chunk(data)
        return
    frame = wire.parse_frame(raw)
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
