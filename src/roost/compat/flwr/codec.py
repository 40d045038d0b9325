"""Flower messages as roost instructions: a message is one phase of the "flwr" protocol.

A `Message` to a node becomes `PhaseIns(protocol="flwr", phase=message_type, parameters=arrays,
config=...)`: every array of its `RecordDict` travels in `parameters` (so roost's engines copy them
before the app sees them, and gRPC sends them as raw bytes), and the records' layout — names, keys
and the scalar values of metric and config records — travels as one JSON string in the config. A
reply comes back as `PhaseRes(arrays, values)` the same way. Nothing is pickled: JSON holds only
names, numbers, strings and booleans; `bytes` values travel as uint8 arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roost.compat.flwr.message import Context, Error, ErrorCode, Message, Metadata
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_value,
    wrap_array,
)
from roost.core.types import Config, Failure, Parameters, PhaseIns, PhaseRes, Scalar
from roost.errors import InvalidMessageError

PROTOCOL = "flwr"
LAYOUT = "flwr.records"
GROUP_ID = "flwr.group-id"
RUN_ID = "flwr.run-id"
MESSAGE_ID = "flwr.message-id"
TTL = "flwr.ttl"
ERROR_CODE = "flwr.error-code"
ERROR_REASON = "flwr.error-reason"

_RECORD_TYPES: dict[str, type] = {
    "arrays": ArrayRecord,
    "metrics": MetricRecord,
    "config": ConfigRecord,
}

MAX_NODE_NUMBER = 2**63 - 1


def node_number(client_id: str) -> int:
    """Flower's integer node id for a roost client id ("7" is 7; a name gets a stable hash)."""
    if client_id.isdigit() and int(client_id) <= MAX_NODE_NUMBER:
        return int(client_id)
    digest = hashlib.blake2b(client_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & MAX_NODE_NUMBER


# -- records ----------------------------------------------------------------------------------


def encode_records(content: RecordDict) -> tuple[Parameters, str]:
    """The arrays of `content`, in order, and the JSON layout that puts them back together."""
    arrays: Parameters = []
    layout: list[dict[str, Any]] = []
    for name, record in content.items():
        entry: dict[str, Any] = {"name": name, "type": record.kind}
        if isinstance(record, ArrayRecord):
            entry["keys"] = list(record.keys())
            entry["bool"] = []
            for position, array in enumerate(record.values()):
                value = array_value(array)
                if value.dtype == np.bool_:  # the wire carries numbers: booleans go as uint8
                    entry["bool"].append(position)
                    value = value.view(np.uint8)
                arrays.append(value)
        else:
            entry["values"] = {key: _encode_value(value, arrays) for key, value in record.items()}
        layout.append(entry)
    return arrays, json.dumps(layout, separators=(",", ":"))


def _encode_value(value: Any, arrays: Parameters) -> Any:
    if isinstance(value, bytes):
        arrays.append(np.frombuffer(value, dtype=np.uint8))
        return {"bytes": len(arrays) - 1}
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return {"bytes_list": [_encode_value(item, arrays)["bytes"] for item in value]}
    return value


def decode_records(arrays: Sequence[np.ndarray], layout_json: object) -> RecordDict:
    """The `RecordDict` that `encode_records` described; `InvalidMessageError` if malformed."""
    try:
        layout = json.loads(layout_json) if isinstance(layout_json, str) else None
        if not isinstance(layout, list):
            raise InvalidMessageError("the message carries no record layout")
        decoder = _Decoder(arrays)
        content = RecordDict({entry["name"]: decoder.record(entry) for entry in layout})
        if decoder.used != len(arrays):
            raise InvalidMessageError(
                f"the message carries {len(arrays)} arrays but its records use {decoder.used}"
            )
        return content
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise InvalidMessageError(f"malformed Flower message: {error}") from None


class _Decoder:
    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = arrays
        self.used = 0

    def take(self) -> np.ndarray:
        array = self.arrays[self.used]
        self.used += 1
        return array

    def record(self, entry: Mapping[str, Any]) -> Any:
        kind = _RECORD_TYPES[entry["type"]]
        if kind is ArrayRecord:
            booleans = set(entry["bool"])
            record = ArrayRecord()
            for position, key in enumerate(entry["keys"]):
                value = self.take()
                if position in booleans:
                    value = value.astype(np.bool_)
                record[str(key)] = wrap_array(value)
            return record
        return kind({key: self.value(value) for key, value in entry["values"].items()})

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            if "bytes" in value:
                return self._bytes(value["bytes"])
            return [self._bytes(index) for index in value["bytes_list"]]
        return value

    def _bytes(self, index: int) -> bytes:
        if index != self.used:
            raise InvalidMessageError("bytes values out of order")
        return self.take().astype(np.uint8, copy=False).tobytes()


# -- messages ---------------------------------------------------------------------------------


def message_to_instruction(message: Message) -> PhaseIns:
    """The roost instruction that carries `message` to its node."""
    arrays, layout = encode_records(message.content)
    metadata = message.metadata
    config: Config = {
        LAYOUT: layout,
        GROUP_ID: metadata.group_id,
        RUN_ID: metadata.run_id,
        MESSAGE_ID: metadata.message_id,
        TTL: float(metadata.ttl),
    }
    return PhaseIns(PROTOCOL, metadata.message_type, parameters=arrays, config=config)


def instruction_to_message(instruction: PhaseIns, node_id: int) -> Message:
    """The message a node receives, rebuilt from the instruction that carried it."""
    config = instruction.config
    content = decode_records(instruction.parameters, config.get(LAYOUT))
    message = Message(content, node_id, instruction.phase)
    message.metadata = Metadata(
        run_id=_int(config.get(RUN_ID, 0)),
        message_id=str(config.get(MESSAGE_ID, "")),
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id=str(config.get(GROUP_ID, "")),
        ttl=float(config.get(TTL, message.metadata.ttl)),
        message_type=instruction.phase,
    )
    return message


def _int(value: Scalar) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(f"expected an integer run id, got {value!r}")
    return value


def reply_to_result(reply: Message) -> PhaseRes:
    """The roost result that carries a ClientApp's reply back to the server."""
    if reply.has_error():
        error = reply.error
        values: dict[str, Scalar] = {ERROR_CODE: int(error.code)}
        if error.reason is not None:
            values[ERROR_REASON] = str(error.reason)
        return PhaseRes([], values)
    arrays, layout = encode_records(reply.content)
    return PhaseRes(arrays, {LAYOUT: layout})


def result_to_reply(result: PhaseRes, sent: Message) -> Message:
    """The reply message the server sees for `sent`, rebuilt from the node's result."""
    if ERROR_CODE in result.values:
        reason = result.values.get(ERROR_REASON)
        return Message(
            Error(int(result.values[ERROR_CODE]), None if reason is None else str(reason)),
            reply_to=sent,
        )
    return Message(decode_records(result.arrays, result.values.get(LAYOUT)), reply_to=sent)


_ERROR_CODES = {
    "error": ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
    "disconnected": ErrorCode.NODE_UNAVAILABLE,
    "timeout": ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
}


def failure_to_reply(failure: Failure, sent: Message) -> Message:
    """The error reply the server sees for a node that failed to answer `sent`."""
    code = _ERROR_CODES.get(failure.kind, ErrorCode.UNKNOWN)
    return Message(Error(code, f"{failure.kind}: {failure.reason}"), reply_to=sent)


def flower_context(
    run_id: int,
    node_id: int,
    node_config: Mapping[str, Any],
    run_config: Mapping[str, Any],
    state: RecordDict,
) -> Context:
    """A Flower `Context` with copies of the configs (an app that edits them reaches no one)."""
    return Context(run_id, node_id, dict(node_config), state, dict(run_config))
