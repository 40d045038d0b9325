"""Frames on the wire: parsing them, and building and reading chunk frames without copies."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from roost.errors import InvalidMessageError
from roost.transport.grpc import roost_pb2 as pb


def parse_frame(raw: bytes) -> pb.Frame:
    """Parse one frame, or raise `InvalidMessageError` if it is not a valid roost frame."""
    frame = pb.Frame()
    try:
        frame.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidMessageError(f"malformed frame ({len(raw)} bytes): {error}") from None
    if frame.WhichOneof("body") is None:
        raise InvalidMessageError("empty frame: it carries none of the known frame kinds")
    return frame


def frame_bytes(**body: object) -> bytes:
    """Serialize a Frame with one body field, e.g. `frame_bytes(run_end=pb.Farewell())`."""
    return pb.Frame(**body).SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Tags of Frame.chunk (field 5) and Chunk.data (field 1), both length-delimited (wire type 2).
_FRAME_CHUNK_TAG = bytes([5 << 3 | 2])
_CHUNK_DATA_TAG = bytes([1 << 3 | 2])


def chunk_frame(data: memoryview | bytes) -> bytes:
    """`Frame(chunk=Chunk(data=data))` serialized, built directly to copy the data only once."""
    inner_prefix = _CHUNK_DATA_TAG + _varint(len(data))
    return b"".join((_FRAME_CHUNK_TAG, _varint(len(inner_prefix) + len(data)), inner_prefix, data))


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    for index in range(position, min(position + 10, len(raw))):
        value |= (raw[index] & 0x7F) << shift
        if raw[index] < 0x80:
            return value, index + 1
        shift += 7
    return -1, len(raw)


def chunk_data(raw: bytes) -> memoryview | None:
    """The data of a serialized `Frame(chunk=...)`, without copying or parsing it.

    Chunk frames carry nearly all the bytes of a run; reading them in place saves a copy of every
    model received. Returns None for anything not laid out exactly as `chunk_frame` writes it;
    such frames go through `parse_frame`, which then decides.
    """
    if not raw.startswith(_FRAME_CHUNK_TAG):
        return None
    outer, position = _read_varint(raw, 1)
    if position + outer != len(raw) or raw[position : position + 1] != _CHUNK_DATA_TAG:
        return None
    inner, position = _read_varint(raw, position + 1)
    if inner <= 0 or position + inner != len(raw):
        return None
    return memoryview(raw)[position:]
