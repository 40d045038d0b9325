"""FedXgbBagging / FedXgbCyclic: XGBoost JSON models (as bytes) merged or passed on by the
server, on synthetic gbtree models (the server needs no XGBoost)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_flower_strategies import run_main

from roost.compat.flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from roost.compat.flwr.clientapp import ClientApp
from roost.compat.flwr.serverapp import strategy as flwr_strategy
from roost.compat.flwr.serverapp.strategy.fedxgb import bag_trees


def _model(leaves: list[float]) -> bytes:
    trees = [{"id": i, "leaf": leaf} for i, leaf in enumerate(leaves)]
    booster = {
        "name": "gbtree",
        "model": {
            "gbtree_model_param": {"num_trees": str(len(trees)), "num_parallel_tree": "1"},
            "iteration_indptr": list(range(len(trees) + 1)),
            "tree_info": [0] * len(trees),
            "trees": trees,
        },
    }
    return json.dumps({"learner": {"gradient_booster": booster}}).encode()


def _trees(raw: bytes) -> dict:
    return json.loads(raw)["learner"]["gradient_booster"]["model"]


def _booster_app(seen: list, broken_node: int | None = None) -> ClientApp:
    """Node p boosts one tree with leaf 10·round + p; it records the model it was sent."""
    app = ClientApp()

    def reply(msg: Message, content: dict) -> Message:
        return Message(RecordDict(content), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = context.node_config["partition-id"]
        sent = msg.content["arrays"]["0"].numpy().tobytes()
        seen.append(("train", partition, sent))
        leaf = 10.0 * msg.content["config"]["server-round"] + partition
        raw = b"not json" if partition == broken_node else _model([leaf])
        arrays = ArrayRecord([np.frombuffer(raw, np.uint8)])
        return reply(msg, {"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})})

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        seen.append(("evaluate", None, msg.content["arrays"]["0"].numpy().tobytes()))
        metrics = MetricRecord({"auc": 0.5, "num-examples": 1})
        return reply(msg, {"metrics": metrics})

    return app


def _start(strategy, num_rounds: int, results: list):
    def main(grid, context) -> None:
        empty = ArrayRecord([np.frombuffer(b"", np.uint8)])
        results.append(strategy.start(grid=grid, initial_arrays=empty, num_rounds=num_rounds))

    return main


def test_bag_trees_appends_every_nodes_trees_with_ids_and_counts_renumbered() -> None:
    merged = _trees(bag_trees(b"", [_model([1.0, 2.0]), _model([3.0])]))
    assert [tree["leaf"] for tree in merged["trees"]] == [1.0, 2.0, 3.0]
    assert [tree["id"] for tree in merged["trees"]] == [0, 1, 2]
    assert merged["iteration_indptr"] == [0, 1, 2, 3] and merged["tree_info"] == [0, 0, 0]
    assert merged["gbtree_model_param"]["num_trees"] == "3"
    assert bag_trees(_model([1.0]), []) == _model([1.0])
    dart = json.dumps({"learner": {"gradient_booster": {"name": "dart"}}}).encode()
    with pytest.raises(ValueError, match="only gbtree"):
        bag_trees(b"", [dart])


def test_bagging_grows_the_ensemble_by_every_nodes_trees_each_round(caplog) -> None:
    seen: list = []
    results: list = []
    strategy = flwr_strategy.FedXgbBagging(min_available_nodes=3, min_train_nodes=3)
    with caplog.at_level(logging.WARNING, logger="roost"):
        history = run_main(_start(strategy, 2, results), _booster_app(seen, broken_node=2))
    final = _trees(results[0].arrays["0"].numpy().tobytes())
    # Node 2's reply is no model: left out; nodes 0 and 1 add one tree a round, in node order.
    assert [tree["leaf"] for tree in final["trees"]] == [10.0, 11.0, 20.0, 21.0]
    assert final["gbtree_model_param"]["num_trees"] == "4"
    assert "node" in caplog.text and "no usable model" in caplog.text
    round_two = [sent for kind, _, sent in seen if kind == "train"][3:]
    assert all(len(_trees(sent)["trees"]) == 2 for sent in round_two)  # round 1's ensemble
    assert [r.fit_results for r in history.rounds] == [3, 3]
    assert history.metrics_distributed["auc"] == [(1, 0.5), (2, 0.5)]


def test_cyclic_hands_the_model_to_one_node_a_round_in_turn() -> None:
    seen: list = []
    results: list = []
    strategy = flwr_strategy.FedXgbCyclic(fraction_evaluate=0.0)
    run_main(_start(strategy, 4, results), _booster_app(seen))
    trained = [partition for kind, partition, _ in seen if kind == "train"]
    assert trained == [0, 1, 2, 0]
    final = _trees(results[0].arrays["0"].numpy().tobytes())
    assert [tree["leaf"] for tree in final["trees"]] == [40.0]  # the last node's model
    assert not [kind for kind, _, _ in seen if kind == "evaluate"]
