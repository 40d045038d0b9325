"""Encoding and decoding of roost's wire format (see `roost.proto`), shared by server and client.

Arrays travel as (dtype string, shape) in a `Header` followed by their raw little-endian bytes in
`Chunk` frames. Everything received is checked before memory is allocated for it: dtypes come from
a fixed list, the declared size must fit the receiver's limit, and the chunks must add up to exactly
the declared size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from roost.core.types import (
    Config,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    Instruction,
    Parameters,
    PhaseIns,
    PhaseRes,
    Result,
    Scalar,
)
from roost.core.validation import to_scalar
from roost.errors import InvalidMessageError
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.frames import chunk_frame, frame_bytes

PROTOCOL_VERSION = 2
"""Version of the frame protocol; a server admits only clients that speak the same one.

2: a client sends a result's chunks only once the server has granted its upload (`UploadGrant`).
"""
SERVICE = "roost.v1.Federation"
JOIN_METHOD = f"/{SERVICE}/Join"

DEFAULT_CHUNK_BYTES = 1 << 20
"""Bytes of array data per `Chunk` frame of a result (1 MiB): the default of clients.

A client sends its chunks only once the server has granted it an upload slot, and the server
reads them as they come, so a chunk's size costs the server memory only for the uploads in
progress (one chunk each), never for the clients that wait for a slot.
"""

INSTRUCTION_CHUNK_BYTES = 1 << 20
"""Bytes of array data per `Chunk` frame of an instruction (1 MiB): the default of servers.

The server builds a cohort's frames once and gRPC holds a copy only of the frames being written
(one per send slot), so large frames cost the server little and reach clients in fewer steps.
"""

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
"""Largest instruction or result accepted, counting its array bytes (1 GiB)."""

# Room for the largest Header (config/metrics) or Chunk frame, whatever the chunk size.
FRAME_LIMIT_BYTES = 4 << 20

MAX_ARRAYS = 100_000
MAX_DIMENSIONS = 32

# Only plain integers and floats cross the wire: no objects, strings, structured or void dtypes.
ALLOWED_DTYPES = frozenset(
    ["|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"]
)

_KIND_OF = {
    GetParametersIns: pb.GET_PARAMETERS,
    FitIns: pb.FIT,
    EvaluateIns: pb.EVALUATE,
    PhaseIns: pb.PHASE,
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def kind_of(instruction: Instruction) -> int:
    """The wire `Kind` of an instruction (and of the result that answers it)."""
    return _KIND_OF[type(instruction)]


def kind_name(kind: int) -> str:
    return pb.Kind.Name(kind) if kind in pb.Kind.values() else f"unknown kind {kind}"


# -- config and metric values ---------------------------------------------------------------------


def encode_values(values: Mapping[str, Scalar], what: str) -> list[pb.Entry]:
    """Config or metrics as protobuf entries; raise `InvalidMessageError` for other types."""
    entries: list[pb.Entry] = []
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidMessageError(f"{what} keys must be strings, got {key!r}")
        value = to_scalar(value, f"{what}[{key!r}]")
        if isinstance(value, bool):
            scalar = pb.Scalar(bool_value=value)
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise InvalidMessageError(f"{what}[{key!r}] = {value} does not fit in 64 bits")
            scalar = pb.Scalar(int_value=value)
        elif isinstance(value, float):
            scalar = pb.Scalar(float_value=value)
        elif isinstance(value, str):
            scalar = pb.Scalar(str_value=value)
        else:
            scalar = pb.Scalar(bytes_value=value)
        entries.append(pb.Entry(key=key, value=scalar))
    return entries


def decode_values(entries: Sequence[pb.Entry], what: str) -> dict[str, Scalar]:
    decoded: dict[str, Scalar] = {}
    for entry in entries:
        field = entry.value.WhichOneof("value")
        if field is None:
            raise InvalidMessageError(f"{what}[{entry.key!r}] carries no value")
        if entry.key in decoded:
            raise InvalidMessageError(f"{what} has the key {entry.key!r} twice")
        decoded[entry.key] = getattr(entry.value, field)
    return decoded


# -- arrays ---------------------------------------------------------------------------------------


def _little_endian(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidMessageError(f"parameters must be NumPy arrays, got {type(array).__name__}")
    array = np.require(array, dtype=array.dtype.newbyteorder("<"), requirements="C")
    if array.dtype.str not in ALLOWED_DTYPES:
        raise InvalidMessageError(
            f"arrays of dtype {array.dtype} cannot be sent; use integer or float arrays"
        )
    return array


def array_specs(arrays: Sequence[np.ndarray]) -> tuple[list[pb.ArraySpec], list[np.ndarray]]:
    """The wire description of `arrays`, and the arrays as C-contiguous little-endian data."""
    prepared = [_little_endian(array) for array in arrays]
    specs = [pb.ArraySpec(dtype=a.dtype.str, shape=list(a.shape)) for a in prepared]
    return specs, prepared


def array_chunk_frames(array: np.ndarray, chunk_bytes: int) -> Iterator[bytes]:
    """Serialized `Chunk` frames of one array's bytes (none for an empty array).

    A chunk never spans two arrays, so each array's frames can be built (and shared) alone.
    """
    data = memoryview(_little_endian(array).reshape(-1).view(np.uint8))
    for start in range(0, len(data), chunk_bytes):
        yield chunk_frame(data[start : start + chunk_bytes])


def chunk_frames(arrays: Sequence[np.ndarray], chunk_bytes: int) -> Iterator[bytes]:
    """Serialized `Chunk` frames holding the arrays' bytes back to back (empty arrays add none)."""
    for array in arrays:
        yield from array_chunk_frames(array, chunk_bytes)


def count_chunks(arrays: Sequence[np.ndarray], chunk_bytes: int) -> int:
    return sum(math.ceil(array.nbytes / chunk_bytes) for array in arrays)


@dataclass(frozen=True)
class Layout:
    """Checked array specs of an incoming message."""

    dtypes: list[np.dtype]
    shapes: list[tuple[int, ...]]
    nbytes: list[int]

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes)


def check_specs(specs: Sequence[pb.ArraySpec], max_bytes: int) -> Layout:
    """Check declared arrays before anything is allocated for them."""
    if len(specs) > MAX_ARRAYS:
        raise InvalidMessageError(f"{len(specs)} arrays declared; at most {MAX_ARRAYS} accepted")
    dtypes, shapes, sizes = [], [], []
    total = 0
    for index, spec in enumerate(specs):
        if spec.dtype not in ALLOWED_DTYPES:
            raise InvalidMessageError(
                f"array {index} has dtype {spec.dtype!r}; accepted: "
                f"{', '.join(sorted(ALLOWED_DTYPES))}"
            )
        if len(spec.shape) > MAX_DIMENSIONS:
            raise InvalidMessageError(f"array {index} has {len(spec.shape)} dimensions")
        dtype = np.dtype(spec.dtype)
        nbytes = dtype.itemsize * math.prod(spec.shape)
        total += nbytes
        if total > max_bytes:
            raise InvalidMessageError(
                f"message declares more than {max_bytes} bytes of arrays, the limit of this "
                "receiver; raise max_message_bytes on both sides if the model really is that big"
            )
        dtypes.append(dtype)
        shapes.append(tuple(int(d) for d in spec.shape))
        sizes.append(nbytes)
    return Layout(dtypes, shapes, sizes)


def check_layout_matches(layout: Layout, template: Parameters) -> None:
    """A result's arrays must have the global model's count, shapes and dtypes."""
    if len(layout.shapes) != len(template):
        raise InvalidMessageError(
            f"expected {len(template)} arrays like the global model, got {len(layout.shapes)}"
        )
    for index, (dtype, shape, reference) in enumerate(
        zip(layout.dtypes, layout.shapes, template, strict=True)
    ):
        if shape != reference.shape:
            raise InvalidMessageError(
                f"parameter {index} has shape {shape}, the global model has {reference.shape}"
            )
        if dtype != reference.dtype:
            raise InvalidMessageError(
                f"parameter {index} has dtype {dtype}, the global model has {reference.dtype}"
            )


def check_chunk_count(header: pb.Header, layout: Layout) -> None:
    """A message declares at least one chunk for its array bytes, and no empty chunk."""
    total = layout.total_bytes
    if header.num_chunks > total:
        raise InvalidMessageError(
            f"{header.num_chunks} chunks declared for {total} bytes of arrays"
        )
    if total and not header.num_chunks:
        raise InvalidMessageError(f"no chunks declared for {total} bytes of arrays")


class Assembly:
    """Collects one message's chunks into a single buffer, checking counts and sizes."""

    def __init__(self, header: pb.Header, layout: Layout) -> None:
        check_chunk_count(header, layout)
        self.header = header
        self.layout = layout
        self._buffer = bytearray(layout.total_bytes)
        self._received = 0
        self._chunks = 0

    @property
    def complete(self) -> bool:
        return self._chunks == self.header.num_chunks

    def add(self, data: bytes | memoryview) -> None:
        if not data:
            raise InvalidMessageError("empty chunk")
        end = self._received + len(data)
        if end > self.layout.total_bytes:
            raise InvalidMessageError(
                f"chunks carry more than the {self.layout.total_bytes} bytes declared"
            )
        self._buffer[self._received : end] = data
        self._received = end
        self._chunks += 1
        if self.complete and self._received != self.layout.total_bytes:
            raise InvalidMessageError(
                f"{self._chunks} chunks carried {self._received} bytes, "
                f"{self.layout.total_bytes} were declared"
            )

    def arrays(self) -> Parameters:
        """The received arrays (writable, native byte order on little-endian machines)."""
        assert self.complete
        arrays: Parameters = []
        offset = 0
        for dtype, shape, nbytes in zip(
            self.layout.dtypes, self.layout.shapes, self.layout.nbytes, strict=True
        ):
            flat = np.frombuffer(
                self._buffer, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset
            )
            arrays.append(flat.reshape(shape))
            offset += nbytes
        return arrays


# -- instructions and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A message ready to send: its header (message_id still to set) and its chunk frames."""

    header: pb.Header
    chunks: Iterator[bytes] | list[bytes]

    def frames(self, field: str, message_id: int) -> Iterator[bytes]:
        yield header_frame(self.header, field, message_id)
        yield from self.chunks


def header_frame(header: pb.Header, field: str, message_id: int) -> bytes:
    """The serialized frame of `header` as message `message_id` (`header` itself is unchanged)."""
    copy = pb.Header()
    copy.CopyFrom(header)
    copy.message_id = message_id
    return frame_bytes(**{field: copy})


def _encode(
    kind: int,
    arrays: Sequence[np.ndarray],
    values: Mapping[str, Scalar],
    what: str,
    chunk_bytes: int,
    **fields: object,
) -> Encoded:
    """A message's header, and its chunk frames as a generator: none is built until read."""
    specs, prepared = array_specs(arrays)
    header = pb.Header(
        kind=kind,
        arrays=specs,
        num_chunks=count_chunks(prepared, chunk_bytes),
        values=encode_values(values, what),
        **fields,
    )
    return Encoded(header, chunk_frames(prepared, chunk_bytes))


def instruction_arrays(instruction: Instruction) -> list[np.ndarray]:
    """The arrays an instruction carries, in wire order (a phase's model, then its payload)."""
    if isinstance(instruction, PhaseIns):
        return [*instruction.parameters, *instruction.arrays]
    if isinstance(instruction, GetParametersIns):
        return []
    return list(instruction.parameters)


def _encode_instruction(instruction: Instruction, chunk_bytes: int) -> Encoded:
    fields: dict[str, object] = {}
    if isinstance(instruction, PhaseIns):
        fields = {
            "protocol": instruction.protocol,
            "phase": instruction.phase,
            "num_parameters": len(instruction.parameters),
        }
    arrays = instruction_arrays(instruction)
    return _encode(
        kind_of(instruction), arrays, instruction.config, "config", chunk_bytes, **fields
    )


def instruction_header(instruction: Instruction, chunk_bytes: int) -> pb.Header:
    """The header of an instruction's message; raise `InvalidMessageError` if it cannot travel."""
    return _encode_instruction(instruction, chunk_bytes).header


def encode_instruction(instruction: Instruction, chunk_bytes: int) -> Encoded:
    """Encode one instruction with its chunk frames built, to be sent any number of times."""
    encoded = _encode_instruction(instruction, chunk_bytes)
    return Encoded(encoded.header, list(encoded.chunks))


def encode_result(result: Result, chunk_bytes: int) -> Encoded:
    """Encode a client's result; chunk frames are produced lazily while sending."""
    if isinstance(result, FitRes):
        return _encode(
            pb.FIT,
            result.parameters,
            result.metrics,
            "metrics",
            chunk_bytes,
            num_examples=result.num_examples,
        )
    if isinstance(result, EvaluateRes):
        return _encode(
            pb.EVALUATE,
            [],
            result.metrics,
            "metrics",
            chunk_bytes,
            num_examples=result.num_examples,
            loss=result.loss,
        )
    if isinstance(result, GetParametersRes):
        return _encode(pb.GET_PARAMETERS, result.parameters, {}, "metrics", chunk_bytes)
    if isinstance(result, PhaseRes):
        return _encode(pb.PHASE, result.arrays, result.values, "values", chunk_bytes)
    raise TypeError(f"cannot encode {type(result).__name__}")


def decode_instruction(header: pb.Header, arrays: Parameters) -> Instruction:
    config: Config = decode_values(header.values, "config")
    if header.kind == pb.FIT:
        return FitIns(arrays, config)
    if header.kind == pb.EVALUATE:
        return EvaluateIns(arrays, config)
    if header.kind == pb.GET_PARAMETERS:
        if arrays:
            raise InvalidMessageError("a get_parameters instruction carries no arrays")
        return GetParametersIns(config)
    if header.kind == pb.PHASE:
        split = header.num_parameters
        if split > len(arrays) or not header.protocol or not header.phase:
            raise InvalidMessageError("a phase instruction names its protocol, phase and model")
        return PhaseIns(header.protocol, header.phase, arrays[:split], arrays[split:], config)
    raise InvalidMessageError(f"instruction of {kind_name(header.kind)}")


def decode_result(header: pb.Header, arrays: Parameters) -> Result:
    metrics = decode_values(header.values, "metrics")
    if header.kind == pb.FIT:
        return FitRes(arrays, int(header.num_examples), metrics)
    if header.kind == pb.EVALUATE:
        if arrays:
            raise InvalidMessageError("an evaluate result carries no arrays")
        return EvaluateRes(float(header.loss), int(header.num_examples), metrics)
    if header.kind == pb.GET_PARAMETERS:
        return GetParametersRes(arrays)
    if header.kind == pb.PHASE:
        return PhaseRes(arrays, metrics)
    raise InvalidMessageError(f"result of {kind_name(header.kind)}")
