"""Flower's tree-ensemble strategies for XGBoost: `FedXgbBagging` and `FedXgbCyclic`.

The model travels as an XGBoost JSON model (`booster.save_raw("json")`) in one uint8 array, the
first of the ArrayRecord (`"0"`); the first round starts from an empty array. Bagging: each node
boosts new trees on the global ensemble and sends back only those; the server appends every
node's trees to the global ensemble (in node order, so a seeded run repeats). Cyclic: one node a
round, in turn, boosts the whole model and the server takes it as the new global model.

Byte arrays of a different length from every node are no weighted mean, so these run their own
Flower-style loop (`roost.compat.flwr.serverapp.strategy.own_loop`), not roost's round loop; the
server parses the JSON only (no XGBoost needed). A reply that is no gbtree JSON model is logged
and left out, as a failed node.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from roost.compat.flwr.message import Message, MessageType
from roost.compat.flwr.records import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.base import FedAvg
from roost.compat.flwr.serverapp.strategy.messaging import ROUND_KEY
from roost.compat.flwr.serverapp.strategy.own_loop import run_own_rounds
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.compat.flwr.serverapp.strategy.strategy_utils import (
    aggregate_metricrecords,
    valid_replies,
)
from roost.errors import ConfigurationError

log = logging.getLogger("roost")


def model_bytes(arrays: ArrayRecord) -> bytes:
    """The serialized model: the bytes of the record's first array."""
    if not arrays:
        raise ConfigurationError("the ArrayRecord holds no model; send the JSON model as array 0")
    return np.asarray(next(iter(arrays.values())).numpy()).tobytes()


def model_record(model: bytes) -> ArrayRecord:
    """`model` as Flower's XGBoost examples carry it: one uint8 array, named "0"."""
    return ArrayRecord([np.frombuffer(model, dtype=np.uint8)])


def _trees(model: dict[str, Any]) -> dict[str, Any]:
    booster = model["learner"]["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise ValueError(f"a {booster.get('name')!r} booster; only gbtree ensembles can be bagged")
    return booster["model"]


def bag_trees(global_model: bytes, node_models: list[bytes]) -> bytes:
    """`global_model` with every tree of `node_models` appended, ids renumbered (an empty global
    model is the first node's). Raises ValueError for bytes that are no gbtree JSON model."""
    merged = json.loads(global_model) if global_model else None
    for raw in node_models:
        model = json.loads(raw)
        source = _trees(model)
        if merged is None:
            merged = model
            continue
        target = _trees(merged)
        for tree in source["trees"]:
            target["trees"].append({**tree, "id": len(target["trees"])})
        target["tree_info"] = [*target["tree_info"], *source["tree_info"]]
        if "iteration_indptr" in target and "iteration_indptr" in source:
            base = target["iteration_indptr"][-1]
            extra = [base + end for end in source["iteration_indptr"][1:]]
            target["iteration_indptr"] = [*target["iteration_indptr"], *extra]
        target["gbtree_model_param"]["num_trees"] = str(len(target["trees"]))
    return global_model if merged is None else json.dumps(merged).encode()


class _FedXgb(FedAvg):
    """What both share: the global model kept between configure and aggregate, their loop."""

    _global_model: bytes = b""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global_model = model_bytes(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def _models(self, server_round: int, replies: Iterable[Message]) -> list[tuple[int, bytes]]:
        """(node id, model bytes) of every valid reply, in node order."""
        pairs = sorted((r.metadata.src_node_id, r) for r in replies if not r.has_error())
        models = []
        for node_id, reply in pairs:
            try:
                (record,) = reply.content.array_records.values()
                raw = model_bytes(record)
                _trees(json.loads(raw))
            except (ValueError, KeyError, TypeError, ConfigurationError) as error:
                log.warning(
                    "round %d: node %s sent no usable model: %s", server_round, node_id, error
                )
                continue
            models.append((node_id, raw))
        return models

    def _metrics(self, replies: list[Message]) -> MetricRecord | None:
        contents = valid_replies(replies, "train")
        if not contents:
            return None
        function = self.train_metrics_aggr_fn or aggregate_metricrecords
        return function(contents, self.weighted_by_key)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Any = None,
        **roost_options: Any,
    ) -> Result:
        """Run `num_rounds` rounds from `initial_arrays` (an empty model is fine) through the
        grid; return the final model and every round's metrics."""
        if roost_options:
            raise ConfigurationError(
                f"{type(self).__name__} takes no {sorted(roost_options)} (no wrappers)"
            )
        self._check_runnable(grid, initial_arrays)
        return run_own_rounds(
            self, grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config,
            evaluate_fn,
        )  # fmt: skip


class FedXgbBagging(_FedXgb):
    """Bagging of XGBoost trees: every round the nodes' new trees join the global ensemble
    (Flower's arguments: those of `FedAvg`)."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        models = self._models(server_round, replies)
        if not models:
            return None, self._metrics(replies)
        self._global_model = bag_trees(self._global_model, [raw for _, raw in models])
        return model_record(self._global_model), self._metrics(replies)


class FedXgbCyclic(_FedXgb):
    """Cyclic XGBoost training: one node a round, in turn by node id, boosts the global model,
    which its reply replaces (Flower's arguments: those of `FedAvg`; one node trains)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global_model = model_bytes(arrays)
        node_ids = sorted(grid.wait_for_nodes(max(1, self.min_available_nodes)))
        node_id = node_ids[(server_round - 1) % len(node_ids)]
        content = RecordDict(
            {
                self.arrayrecord_key: arrays,
                self.configrecord_key: ConfigRecord({**config, ROUND_KEY: server_round}),
            }
        )
        return [Message(content, node_id, MessageType.TRAIN, group_id=str(server_round))]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        models = self._models(server_round, replies)
        if not models:
            return None, self._metrics(replies)
        self._global_model = models[0][1]
        return model_record(self._global_model), self._metrics(replies)


__all__ = ["FedXgbBagging", "FedXgbCyclic", "bag_trees"]
