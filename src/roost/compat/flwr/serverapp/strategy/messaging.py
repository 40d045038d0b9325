"""The `Transport` a Flower strategy's `start` hands roost's round loop: rounds as messages.

roost's strategy chooses the cohort and sends `FitIns` / `EvaluateIns`; here each becomes the
message a Flower strategy sends (`train` / `evaluate`, content `{"arrays": ArrayRecord, "config":
ConfigRecord}` with `"server-round"`, group id = the round), goes out through the app's `Grid`, and
each node's reply comes back as the `FitRes` / `EvaluateRes` roost aggregates: the reply's one
`ArrayRecord` in the global model's key order, and `num-examples` (the strategy's
`weighted_by_key`) from its one `MetricRecord`, as Flower reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roost.compat.flwr import codec
from roost.compat.flwr.message import Message, MessageType
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_value,
    array_values,
    wrap_arrays,
)
from roost.compat.flwr.serverapp.grid import Grid
from roost.core.types import (
    ClientId,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    Instruction,
    Metrics,
    Outcome,
)
from roost.core.types import Result as RoostResult

ROUND_KEY = "server-round"


@dataclass
class MessageLayout:
    """How a strategy's messages look: record keys, the weighting metric, extra train config."""

    names: list[str]
    weighted_by_key: str = "num-examples"
    arrayrecord_key: str = "arrays"
    configrecord_key: str = "config"
    train_config: ConfigRecord = field(default_factory=ConfigRecord)
    evaluate_config: ConfigRecord = field(default_factory=ConfigRecord)
    train_extras: dict[str, Any] = field(default_factory=dict)


class GridTransport:
    """roost's `Transport` over a Flower `Grid`: instructions out as messages, replies back."""

    def __init__(self, grid: Grid, layout: MessageLayout) -> None:
        self.grid = grid
        self.layout = layout
        self.server_round = 0
        self.prepared: dict[ClientId, Message] = {}
        """Messages a strategy's own `configure_*` made, sent as they are (by client id)."""
        self.replies: dict[ClientId, Message] = {}
        """Each node's reply of the last exchange (for a strategy's own `aggregate_*`)."""

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        return self.grid.wait_for_clients(count, timeout)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        contents: dict[int, tuple[str, RecordDict]] = {}
        messages: list[Message] = []
        for client_id, instruction in cohort:
            if client_id in self.prepared:
                messages.append(self.prepared[client_id])
                continue
            if id(instruction) not in contents:  # one content per instruction, shared by nodes
                contents[id(instruction)] = self._content(instruction)
            message_type, content = contents[id(instruction)]
            node_id = codec.node_number(client_id)
            group_id = str(self.server_round)
            messages.append(Message(content, node_id, message_type, group_id=group_id))
        instructions = dict(cohort)
        for client_id, _, outcome in self.grid.exchange(messages, timeout):
            if isinstance(outcome, Failure):
                yield client_id, outcome
            else:
                self.replies[client_id] = outcome
                yield client_id, self.result(client_id, instructions[client_id], outcome)

    def close(self) -> None:
        """The grid's transport belongs to the run, which closes it."""

    def _content(self, instruction: Instruction) -> tuple[str, RecordDict]:
        layout = self.layout
        if isinstance(instruction, FitIns):
            message_type, base = MessageType.TRAIN, {**layout.train_config, **layout.train_extras}
        elif isinstance(instruction, EvaluateIns):
            message_type, base = MessageType.EVALUATE, dict(layout.evaluate_config)
        else:
            raise TypeError(
                f"a Flower strategy sends train and evaluate messages, not {instruction}"
            )
        self.server_round = int(instruction.config.get(ROUND_KEY, self.server_round))
        config = ConfigRecord({**base, ROUND_KEY: self.server_round})
        arrays = wrap_arrays(layout.names, list(instruction.parameters))
        return message_type, RecordDict(
            {layout.arrayrecord_key: arrays, layout.configrecord_key: config}
        )

    def result(
        self, client_id: ClientId, instruction: Instruction, reply: Message
    ) -> RoostResult | Failure:
        if reply.has_error():
            error = reply.error
            return Failure(client_id, f"error reply (code {error.code}): {error.reason}", "error")
        try:
            metrics = _one(reply.content.metric_records, "MetricRecord")
            weight = metrics.get(self.layout.weighted_by_key)
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                raise ValueError(
                    f"the reply's MetricRecord has no number under {self.layout.weighted_by_key!r}"
                    f" (got {sorted(metrics)}); report it, e.g. "
                    f'MetricRecord({{"{self.layout.weighted_by_key}": len(trainset)}})'
                )
            scalars = scalar_metrics(metrics)
            num_examples = max(int(weight), 0)
            if isinstance(instruction, FitIns):
                arrays = _one(reply.content.array_records, "ArrayRecord")
                return FitRes(self.ordered(arrays), num_examples, scalars)
            return EvaluateRes(loss_of(metrics), num_examples, scalars)
        except ValueError as error:
            return Failure(client_id, str(error), kind="invalid")

    def ordered(self, arrays: ArrayRecord) -> list[np.ndarray]:
        """The reply's arrays in the global model's order: by name when the names match, else
        by position (Flower aggregates whatever keys the replies carry)."""
        names = self.layout.names
        if sorted(arrays.keys()) == sorted(names):
            return [array_value(arrays[name]) for name in names]
        if len(arrays) != len(names):
            raise ValueError(
                f"the reply's ArrayRecord holds {len(arrays)} arrays, the global model "
                f"{len(names)}; send back one array per array received"
            )
        return array_values(arrays)


def _one(records: Mapping[str, Any], kind: str) -> Any:
    if len(records) != 1:
        raise ValueError(f"the reply must hold exactly one {kind}, it holds {len(records)}")
    return next(iter(records.values()))


def scalar_metrics(record: Mapping[str, Any]) -> Metrics:
    """The scalar entries of a metric record (roost's metrics hold no lists)."""
    return {key: value for key, value in record.items() if not isinstance(value, list)}


def loss_of(record: Mapping[str, Any]) -> float:
    """The record's loss: its first scalar entry whose name contains "loss" (0.0 if none)."""
    for key, value in record.items():
        if "loss" in key.lower() and isinstance(value, int | float):
            return float(value)
    return 0.0


def has_loss(record: Mapping[str, Any]) -> bool:
    return any("loss" in key.lower() and isinstance(v, int | float) for key, v in record.items())


def weighted_average(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's default metric aggregation: every metric (lists element-wise) averaged over the
    replies, weighted by `weighting_key`, which itself is left out."""
    weights = [float(_one(r.metric_records, "MetricRecord")[weighting_key]) for r in records]
    total = sum(weights)
    sums: dict[str, Any] = {}
    for record, weight in zip(records, weights, strict=True):
        factor = weight / total if total else 0.0
        for key, value in _one(record.metric_records, "MetricRecord").items():
            if key == weighting_key:
                continue
            term = np.asarray(value, dtype=np.float64) * factor
            sums[key] = term if key not in sums else sums[key] + term
    return MetricRecord({key: value.tolist() for key, value in sums.items()})


def replies_from_pairs(pairs: list[tuple[int, Metrics]]) -> list[RecordDict]:
    """The metric side of the replies, for Flower's `*_metrics_aggr_fn(replies, weighting_key)`."""
    return [RecordDict({"metrics": MetricRecord(metrics)}) for _, metrics in pairs]
