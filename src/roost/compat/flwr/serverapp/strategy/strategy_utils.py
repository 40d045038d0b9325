"""`flwr.serverapp.strategy.strategy_utils`: the helpers a strategy that runs its own loop uses.

A `FedAvg` subclass may replace `start` with a loop of its own (log, send with
`grid.send_and_receive`, aggregate, save a checkpoint, …) that calls the built-in steps itself.
Outside roost's round loop those steps run here (`roost.compat.flwr.serverapp.strategy.base`):
nodes sampled from the grid, messages built as Flower's FedAvg builds them, and replies averaged
weighted by their `weighted_by_key` metric. Such a loop is the app's own: roost records no
History rounds and no checkpoints for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from roost.compat.flwr.message import Message, MessageType
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_values,
    wrap_arrays,
)
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.messaging import ROUND_KEY, weighted_average
from roost.compat.flwr.unsupported import missing_names
from roost.errors import ConfigurationError

log = logging.getLogger("roost")


def log_strategy_start_info(
    num_rounds: int,
    arrays: ArrayRecord,
    train_config: ConfigRecord | None,
    evaluate_config: ConfigRecord | None,
) -> None:
    """Log what a strategy's run starts from: rounds, model size and the two configs."""
    count = sum(int(np.asarray(value).size) for value in array_values(arrays))
    log.info("starting %d rounds from %d arrays (%d numbers)", num_rounds, len(arrays), count)
    log.info("train config: %s", dict(train_config or {}))
    log.info("evaluate config: %s", dict(evaluate_config or {}))


def aggregate_arrayrecords(records: list[RecordDict], weighting_metric_name: str) -> ArrayRecord:
    """The mean of the replies' arrays (each reply holds one ArrayRecord), weighted by each
    reply's `weighting_metric_name` metric; every array keeps the dtype it arrived with."""
    if not records:
        raise ConfigurationError("aggregate_arrayrecords needs at least one reply")
    weights = [_weight(record, weighting_metric_name) for record in records]
    total = sum(weights)
    if total <= 0:
        raise ConfigurationError(
            f"the replies' {weighting_metric_name!r} metrics add up to {total}; report a count > 0"
        )
    first = _only(dict(records[0].array_records), "ArrayRecord")
    names = list(first.keys())
    sums = [np.zeros(np.shape(value), np.float64) for value in array_values(first)]
    for record, weight in zip(records, weights, strict=True):
        arrays = _only(dict(record.array_records), "ArrayRecord")
        if list(arrays.keys()) != names:
            raise ConfigurationError(
                f"a reply's arrays are named {list(arrays.keys())}, the first reply's {names}; "
                "send back the arrays received, under their names"
            )
        for total_array, value in zip(sums, array_values(arrays), strict=True):
            total_array += np.asarray(value, np.float64) * (weight / total)
    dtypes = [np.asarray(value).dtype for value in array_values(first)]
    return wrap_arrays(names, [s.astype(d) for s, d in zip(sums, dtypes, strict=True)])


def aggregate_metricrecords(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Every metric of the replies averaged, weighted by `weighting_metric_name` (left out)."""
    return weighted_average(records, weighting_metric_name)


def _only(records: dict[str, Any], kind: str) -> Any:
    if len(records) != 1:
        raise ConfigurationError(f"a reply must hold exactly one {kind}, it holds {len(records)}")
    return next(iter(records.values()))


def _weight(record: RecordDict, key: str) -> float:
    metrics = _only(dict(record.metric_records), "MetricRecord")
    weight = metrics.get(key)
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
        raise ConfigurationError(
            f"a reply's MetricRecord has no count >= 0 under {key!r} (got {sorted(metrics)}); "
            f'report it, e.g. MetricRecord({{"{key}": len(trainset)}})'
        )
    return float(weight)


# -- FedAvg's steps outside roost's round loop ------------------------------------------------


def configure(
    strategy: Any,
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    grid: Grid,
    *,
    train: bool,
) -> list[Message]:
    """One message per sampled node, as FedAvg's `configure_train` / `configure_evaluate`."""
    fraction = strategy.fraction_train if train else strategy.fraction_evaluate
    minimum = strategy.min_train_nodes if train else strategy.min_evaluate_nodes
    if fraction == 0:
        return []
    node_ids = sorted(grid.wait_for_nodes(max(strategy.min_available_nodes, minimum)))
    count = min(len(node_ids), max(int(len(node_ids) * fraction), minimum))
    # Seeded like roost's own sampling, so `--seed` repeats the run; the round is mixed in.
    seed = grid.settings.seed
    rng = np.random.default_rng(None if seed is None else [seed, server_round, int(train)])
    chosen = sorted(rng.choice(node_ids, size=count, replace=False).tolist())
    extras = strategy.train_extras() if train else {}
    content = RecordDict(
        {
            strategy.arrayrecord_key: arrays,
            strategy.configrecord_key: ConfigRecord({**config, **extras, ROUND_KEY: server_round}),
        }
    )
    kind = MessageType.TRAIN if train else MessageType.EVALUATE
    return [Message(content, node_id, kind, group_id=str(server_round)) for node_id in chosen]


def valid_replies(replies: Iterable[Message], step: str) -> list[RecordDict]:
    """The contents of the replies without an error (each error is logged)."""
    contents = []
    for reply in replies:
        if reply.has_error():
            log.warning("%s: node %s failed: %s", step, reply.metadata.src_node_id, reply.error)
        else:
            contents.append(reply.content)
    return contents


def aggregate_train(
    strategy: Any, server_round: int, replies: Iterable[Message]
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """FedAvg's `aggregate_train`: the weighted mean of the arrays, the metrics aggregated."""
    contents = valid_replies(replies, f"aggregate_train (round {server_round})")
    if not contents:
        return None, None
    key = strategy.weighted_by_key
    arrays = aggregate_arrayrecords(contents, key)
    metrics = (strategy.train_metrics_aggr_fn or aggregate_metricrecords)(contents, key)
    return arrays, metrics


def aggregate_evaluate(
    strategy: Any, server_round: int, replies: Iterable[Message]
) -> MetricRecord | None:
    """FedAvg's `aggregate_evaluate`: the replies' metrics aggregated."""
    contents = valid_replies(replies, f"aggregate_evaluate (round {server_round})")
    if not contents:
        return None
    function = strategy.evaluate_metrics_aggr_fn or aggregate_metricrecords
    return function(contents, strategy.weighted_by_key)


__all__ = ["aggregate_arrayrecords", "aggregate_metricrecords", "log_strategy_start_info"]

__getattr__ = missing_names("flwr.serverapp.strategy.strategy_utils", __all__)
