"""The wire format: arrays, values and frames survive the trip; malformed input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roost.core.types import EvaluateIns, EvaluateRes, FitIns, FitRes, GetParametersIns
from roost.errors import InvalidMessageError
from roost.transport.grpc import frames as framing
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc import wire


def send(encoded: wire.Encoded, field: str, max_bytes: int = 1 << 30):
    """Serialize like a sender, then read back like a receiver; return (header, arrays)."""
    frames = list(encoded.frames(field, 42))
    header = getattr(framing.parse_frame(frames[0]), field)
    assert header.message_id == 42 and header.num_chunks == len(frames) - 1
    assembly = wire.Assembly(header, wire.check_specs(header.arrays, max_bytes))
    for raw in frames[1:]:
        data = framing.chunk_data(raw)
        assert data is not None
        assert bytes(data) == framing.parse_frame(raw).chunk.data
        assembly.add(data)
    assert assembly.complete
    return header, assembly.arrays()


ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=">f8").reshape(2, 3),  # big-endian input travels as little-endian
    np.array(2.5),  # 0-d
    np.zeros((0, 7)),
    np.arange(-3, 3, dtype=np.int8),
    np.arange(5, dtype=np.uint64) * (2**40),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
]


def test_arrays_survive_with_dtype_shape_and_values():
    result = FitRes(ARRAYS, 7, {"loss": 0.25, "n": -3, "ok": True, "tag": "x", "raw": b"\x00"})
    header, arrays = send(wire.encode_result(result, chunk_bytes=5), "result")
    decoded = wire.decode_result(header, arrays)
    assert decoded.num_examples == 7
    assert list(decoded.metrics.items()) == list(result.metrics.items())  # order kept
    for got, sent in zip(decoded.parameters, ARRAYS, strict=True):
        assert got.shape == sent.shape
        assert got.dtype == sent.dtype.newbyteorder("<")
        np.testing.assert_array_equal(got, sent)
        assert got.flags.writeable


def test_one_instruction_encoding_serves_many_clients():
    ins = FitIns([np.ones((300, 300))], {"server_round": 3, "lr": 0.1})
    encoded = wire.encode_instruction(ins, chunk_bytes=1 << 16)
    assert isinstance(encoded.chunks, list)  # kept, sent again to every client
    for _ in range(2):
        header, arrays = send(encoded, "instruction")
        decoded = wire.decode_instruction(header, arrays)
        assert isinstance(decoded, FitIns) and decoded.config == {"server_round": 3, "lr": 0.1}
        np.testing.assert_array_equal(decoded.parameters[0], ins.parameters[0])
    assert isinstance(
        wire.decode_instruction(
            *send(wire.encode_instruction(GetParametersIns(), 8), "instruction")
        ),
        GetParametersIns,
    )
    evaluate = wire.decode_result(*send(wire.encode_result(EvaluateRes(0.5, 3, {}), 8), "result"))
    assert evaluate == EvaluateRes(0.5, 3, {})
    assert isinstance(
        wire.decode_instruction(
            *send(wire.encode_instruction(EvaluateIns([], {}), 8), "instruction")
        ),
        EvaluateIns,
    )


def test_chunk_frames_match_protobuf_and_other_frames_are_parsed():
    for size in (1, 127, 128, 300, 70_000):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        raw = framing.chunk_frame(memoryview(data))
        assert raw == pb.Frame(chunk=pb.Chunk(data=data)).SerializeToString()
        assert bytes(framing.chunk_data(raw)) == data
    assert framing.chunk_data(framing.frame_bytes(run_end=pb.Farewell(reason="x"))) is None
    assert framing.chunk_data(b"\x2a\x05\x0a\x09abc") is None  # inconsistent lengths: parse decides
    with pytest.raises(InvalidMessageError, match="malformed"):
        framing.parse_frame(b"\x2a\x05\x0a\x09abc")
    with pytest.raises(InvalidMessageError, match="empty frame"):
        framing.parse_frame(b"")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (pb.ArraySpec(dtype="|O", shape=[3]), "dtype '|O'"),
        (pb.ArraySpec(dtype="<U4", shape=[3]), "dtype '<U4'"),
        (pb.ArraySpec(dtype=">f8", shape=[3]), "dtype '>f8'"),
        (pb.ArraySpec(dtype="<V8", shape=[3]), "dtype '<V8'"),
        (pb.ArraySpec(dtype="<f8", shape=[1] * 33), "33 dimensions"),
        (pb.ArraySpec(dtype="<f8", shape=[2**40, 2**40]), "more than 1000 bytes"),
        (pb.ArraySpec(dtype="<f4", shape=[251]), "more than 1000 bytes"),
    ],
)
def test_declared_arrays_are_checked_before_allocation(spec, fragment):
    with pytest.raises(InvalidMessageError, match=fragment.replace("|", r"\|")):
        wire.check_specs([spec], max_bytes=1000)


def test_declared_sizes_just_within_the_limit_pass():
    layout = wire.check_specs([pb.ArraySpec(dtype="<f4", shape=[250])], max_bytes=1000)
    assert layout.total_bytes == 1000


def test_chunks_must_add_up_to_the_declared_bytes():
    specs = [pb.ArraySpec(dtype="<f8", shape=[2])]  # 16 bytes
    layout = wire.check_specs(specs, 100)

    def assembly(num_chunks):
        return wire.Assembly(pb.Header(arrays=specs, num_chunks=num_chunks), layout)

    with pytest.raises(InvalidMessageError, match="more than the 16 bytes"):
        assembly(1).add(b"\0" * 17)
    with pytest.raises(InvalidMessageError, match="carried 8 bytes, 16 were declared"):
        assembly(1).add(b"\0" * 8)
    with pytest.raises(InvalidMessageError, match="empty chunk"):
        assembly(2).add(b"")
    with pytest.raises(InvalidMessageError, match="17 chunks declared for 16 bytes"):
        assembly(17)
    with pytest.raises(InvalidMessageError, match="no chunks declared"):
        assembly(0)
    two = assembly(2)
    two.add(np.array([1.5]).tobytes())
    two.add(np.array([-2.0]).tobytes())
    np.testing.assert_array_equal(two.arrays()[0], [1.5, -2.0])


def test_values_refuse_what_the_wire_cannot_carry():
    with pytest.raises(InvalidMessageError, match="values must be bool"):
        wire.encode_values({"x": [1, 2]}, "config")
    with pytest.raises(InvalidMessageError, match="does not fit in 64 bits"):
        wire.encode_values({"x": 2**70}, "config")
    entries = [pb.Entry(key="a", value=pb.Scalar(int_value=1))] * 2
    with pytest.raises(InvalidMessageError, match="twice"):
        wire.decode_values(entries, "metrics")
    with pytest.raises(InvalidMessageError, match="carries no value"):
        wire.decode_values([pb.Entry(key="a")], "metrics")
    with pytest.raises(InvalidMessageError, match="cannot be sent"):
        wire.array_specs([np.array(["text"])])


def test_the_committed_generated_code_matches_roost_proto(tmp_path):
    """roost_pb2.py is generated from roost.proto and committed; an edit to one alone fails here."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from google.protobuf import descriptor_pb2

    source_root = Path(pb.__file__).resolve().parents[3]  # the directory holding `roost`
    descriptor_set = tmp_path / "roost.desc"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{source_root}",
            f"--descriptor_set_out={descriptor_set}",
            "roost/transport/grpc/roost.proto",
        ]
    )
    assert status == 0
    [compiled] = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    _clear_json_names(compiled.message_type)  # protoc's Python output leaves them out
    assert committed == compiled, "run `python tools/generate_grpc.py` after editing roost.proto"


def _clear_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)
