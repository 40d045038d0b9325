"""Flower's Message API on roost: records, messages, the wire codec, ClientApp, the flwr alias."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from roost.client.client import Context as NodeContext
from roost.client.protocols import execute
from roost.compat.flwr import alias, codec
from roost.compat.flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from roost.compat.flwr.clientapp import ClientApp, node_client
from roost.compat.flwr.unsupported import UnsupportedFlowerName
from roost.core.types import PhaseRes
from roost.errors import ConfigurationError, InvalidMessageError


def test_array_record_keeps_names_and_order_and_copies() -> None:
    arrays = [np.arange(3.0), np.ones((2, 2), dtype=np.float32)]
    record = ArrayRecord(arrays)
    assert list(record) == ["0", "1"]
    arrays[0][0] = 99.0  # a snapshot: the caller's later changes stay outside
    out = record.to_numpy_ndarrays()
    np.testing.assert_array_equal(out[0], [0.0, 1.0, 2.0])
    assert out[1].dtype == np.float32
    out[1][0, 0] = -1.0
    assert record["1"].numpy()[0, 0] == 1.0
    assert record["1"].shape == (2, 2) and record["1"].dtype == "float32"
    rebuilt = Array(dtype="float32", shape=(2, 2), stype="numpy.ndarray", data=record["1"].data)
    assert rebuilt == record["1"]


def test_array_record_from_torch_state_dict_round_trips() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    record = ArrayRecord(net.state_dict())
    assert list(record) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    state = record.to_torch_state_dict()
    assert list(state) == list(net.state_dict())
    for name, tensor in net.state_dict().items():
        assert torch.equal(state[name], tensor)


def test_records_check_their_values() -> None:
    metrics = MetricRecord({"loss": np.float32(0.5), "n": np.int64(3), "hist": [1.0, 2.0]})
    assert metrics["n"] == 3 and isinstance(metrics["n"], int)
    with pytest.raises(TypeError, match="MetricRecord\\['name'\\]"):
        MetricRecord({"name": "text"})
    config = ConfigRecord({"lr": 0.1, "name": "x", "blob": b"\x00\x01", "flags": [True, False]})
    assert config["blob"] == b"\x00\x01"
    with pytest.raises(TypeError, match="one type"):
        ConfigRecord({"mixed": [1, "a"]})
    with pytest.raises(TypeError, match="RecordDict"):
        RecordDict({"bad": {"a": 1}})
    content = RecordDict({"a": ArrayRecord([np.zeros(1)]), "m": metrics, "c": config})
    assert list(content.array_records) == ["a"]
    assert list(content.metric_records) == ["m"] and list(content.config_records) == ["c"]
    # The typed views write through, as `record_dict.config_records["name"] = ...` expects.
    content.config_records["d"] = ConfigRecord({"x": 1})
    assert content["d"]["x"] == 1 and list(content.config_records) == ["c", "d"]
    with pytest.raises(TypeError, match="expected a MetricRecord"):
        content.metric_records["e"] = ConfigRecord()
    with pytest.raises(KeyError):
        del content.config_records["m"]  # a MetricRecord: not this view's to delete
    del content.config_records["d"]
    assert list(content) == ["a", "m", "c"]


def test_codec_round_trips_every_kind_of_value() -> None:
    content = RecordDict(
        {
            "arrays": ArrayRecord(
                {"w": Array(np.arange(6.0).reshape(2, 3)), "mask": Array(np.array([True, False]))}
            ),
            "config": ConfigRecord(
                {
                    "lr": 0.1,
                    "name": "cnn",
                    "blob": b"ab",
                    "blobs": [b"c", b"d"],
                    "flags": [True, False],
                    "n": 3,
                }
            ),
            "metrics": MetricRecord({"loss": 0.25, "counts": [1, 2, 3]}),
        }
    )
    message = Message(content, 7, "train", group_id="3")
    instruction = codec.message_to_instruction(message)
    assert instruction.protocol == "flwr" and instruction.phase == "train"
    assert all(array.dtype != np.bool_ for array in instruction.parameters)  # wire-safe
    received = codec.instruction_to_message(instruction, node_id=7)
    assert received.metadata.group_id == "3" and received.metadata.message_type == "train"
    back = received.content
    np.testing.assert_array_equal(back["arrays"]["w"].numpy(), np.arange(6.0).reshape(2, 3))
    assert back["arrays"]["mask"].numpy().dtype == np.bool_
    assert dict(back["config"]) == dict(content["config"])
    assert isinstance(back["config"]["lr"], float) and isinstance(back["config"]["n"], int)
    assert dict(back["metrics"]) == {"loss": 0.25, "counts": [1, 2, 3]}


def test_codec_rejects_malformed_layouts() -> None:
    with pytest.raises(InvalidMessageError, match="no record layout"):
        codec.decode_records([], None)
    with pytest.raises(InvalidMessageError, match="carries 2 arrays"):
        codec.decode_records(
            [np.zeros(1), np.zeros(1)], '[{"name":"a","type":"arrays","keys":["x"],"bool":[]}]'
        )
    with pytest.raises(InvalidMessageError, match="malformed"):
        codec.decode_records([], '[{"name":"a","type":"nope"}]')


def test_message_forms_and_errors() -> None:
    message = Message(RecordDict(), dst_node_id=3, message_type="query")
    reply = Message(RecordDict({"m": MetricRecord({"x": 1})}), reply_to=message)
    assert reply.metadata.dst_node_id == message.metadata.src_node_id
    assert reply.metadata.src_node_id == 3 and reply.has_content() and not reply.has_error()
    failed = Message(Error(code=2, reason="boom"), reply_to=message)
    assert failed.has_error() and failed.error.reason == "boom"
    with pytest.raises(ValueError, match="error, not content"):
        _ = failed.content
    with pytest.raises(TypeError, match="dst_node_id and message_type"):
        Message(RecordDict())
    with pytest.raises(TypeError, match="reply takes its addresses"):
        Message(RecordDict(), 1, "train", reply_to=message)
    with pytest.raises(TypeError, match="RecordDict"):
        Message({"a": 1}, 1, "train")


def _node_context(partition_id: int = 0) -> NodeContext:
    return NodeContext.for_partition(partition_id, 2, run_config={"factor": 2})


def test_client_app_handlers_mods_lifespan_and_state() -> None:
    app = ClientApp(mods=[lambda msg, ctx, call: _tagged(call(msg, ctx), "outer")])
    events: list[str] = []

    @app.lifespan()
    def lifespan(context: Context):
        events.append("enter")
        yield
        events.append("exit")

    @app.query("count", mods=[lambda msg, ctx, call: _tagged(call(msg, ctx), "inner")])
    def count(msg: Message, context: Context) -> Message:
        seen = context.state.get("seen", MetricRecord({"n": 0}))
        seen["n"] += 1
        context.state["seen"] = seen
        factor = context.run_config["factor"]
        metrics = MetricRecord({"n": seen["n"] * factor, "node": context.node_id})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    node_context = _node_context(1)
    node = node_client(app, node_context)
    instruction = codec.message_to_instruction(Message(RecordDict(), 1, "query.count"))
    for expected in (2, 4):
        result = execute(node, instruction, node_context)
        assert isinstance(result, PhaseRes)
        reply = codec.result_to_reply(result, Message(RecordDict(), 1, "query.count"))
        assert reply.content["metrics"]["n"] == expected  # the node's state persisted
        assert reply.content["metrics"]["node"] == 1
        assert list(reply.content["tags"]) == ["inner", "outer"]  # per-handler mods run inside
    assert events == ["enter", "exit", "enter", "exit"]
    with pytest.raises(ConfigurationError, match="no handler for 'train'"):
        execute(node, codec.message_to_instruction(Message(RecordDict(), 1, "train")), node_context)


def _tagged(reply: Message, tag: str) -> Message:
    tags = reply.content.get("tags", ConfigRecord())
    tags[tag] = True
    reply.content["tags"] = tags
    return reply


def test_client_app_misuse_is_refused_clearly() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> dict:
        return {"not": "a message"}

    node_context = _node_context()
    instruction = codec.message_to_instruction(Message(RecordDict(), 0, "train"))
    with pytest.raises(TypeError, match="returned a dict"):
        execute(node_client(app, node_context), instruction, node_context)
    legacy = ClientApp(client_fn=lambda context: object())
    with pytest.raises(ConfigurationError, match="client_fn"):
        legacy.train()


def test_unsupported_names_fail_at_import_with_one_line() -> None:
    with pytest.raises(UnsupportedFlowerName, match=r"^flwr\.app\.Mystery is not supported"):
        from roost.compat.flwr.app import Mystery  # noqa: F401
    with alias.flower_alias():
        with pytest.raises(ModuleNotFoundError, match=r"flwr\.nowhere is not supported"):
            import flwr.nowhere  # noqa: F401
        with pytest.raises(ImportError, match=r"flwr\.serverapp\.strategy\.FedXYZ"):
            from flwr.serverapp.strategy import FedXYZ  # noqa: F401


def test_flwr_alias_maps_to_roost_and_is_removed_afterwards() -> None:
    import roost.compat.flwr.app as roost_app

    with alias.flower_alias():
        from flwr.app import Message as AliasedMessage
        from flwr.serverapp.strategy import FedAvg

        assert AliasedMessage is roost_app.Message
        assert FedAvg.__module__.startswith("roost.compat.flwr")
    assert not [name for name in sys.modules if name == "flwr" or name.startswith("flwr.")]


def test_installed_flower_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    fake = tmp_path / "flwr"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import flwr

        assert flwr.REAL
        with pytest.raises(ConfigurationError, match="Flower \\(flwr\\) is installed"):
            alias.install()
        with alias.flower_alias(replace_installed=True):
            import flwr as aliased

            assert aliased.__name__ == "roost.compat.flwr"
        import flwr as restored

        assert restored is flwr  # Flower's own module is back
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("flwr", None)
