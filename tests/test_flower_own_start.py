"""A Message-API FedAvg subclass that replaces `start` with a loop of its own, and
`flwr.serverapp.strategy.strategy_utils` (as Flower's advanced-pytorch example uses them)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_flower_strategies import SIZES, make_client_app, run_main

from roost.compat.flwr import alias
from roost.compat.flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from roost.compat.flwr.serverapp import strategy as flwr_strategy
from roost.compat.flwr.serverapp.strategy.strategy_utils import (
    aggregate_arrayrecords,
    log_strategy_start_info,
)
from roost.errors import ConfigurationError

# make_client_app's node p adds p + 1 to every entry and reports SIZES[p] examples.
STEP = sum(size * (p + 1) for p, size in enumerate(SIZES[:3])) / sum(SIZES[:3])
MEAN_P = sum(size * p for p, size in enumerate(SIZES[:3])) / sum(SIZES[:3])


class OwnLoop(flwr_strategy.FedAvg):
    """The example's shape: a learning-rate schedule in configure_train, a start of its own."""

    def configure_train(self, server_round, arrays, config, grid):
        config["lr"] = 0.1 / server_round
        return super().configure_train(server_round, arrays, config, grid)

    def start(self, grid, initial_arrays, num_rounds=3, timeout=3600.0, train_config=None,
              evaluate_config=None, evaluate_fn=None):  # fmt: skip
        log_strategy_start_info(num_rounds, initial_arrays, train_config, evaluate_config)
        result, arrays = flwr_strategy.Result(), initial_arrays
        for server_round in range(1, num_rounds + 1):
            config = ConfigRecord(dict(train_config or {}))
            messages = self.configure_train(server_round, arrays, config, grid)
            replies = grid.send_and_receive(messages, timeout=timeout)
            arrays, result.train_metrics_clientapp[server_round] = self.aggregate_train(
                server_round, replies
            )
            messages = self.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
            replies = grid.send_and_receive(messages, timeout=timeout)
            metrics = self.aggregate_evaluate(server_round, replies)
            result.evaluate_metrics_clientapp[server_round] = metrics
        result.arrays = arrays
        return result


def test_a_start_of_its_own_runs_fedavgs_steps_through_the_grid(caplog) -> None:
    results: list = []
    configs: list[dict] = []
    strategy = OwnLoop(min_train_nodes=3, min_evaluate_nodes=3, min_available_nodes=3)

    def main(grid, context) -> None:
        arrays = ArrayRecord([np.zeros(3, np.float32), np.zeros(1)])
        results.append(strategy.start(grid, arrays, num_rounds=2))

    with caplog.at_level(logging.INFO, logger="roost"):
        run_main(main, make_client_app(configs))
    result = results[0]
    values = result.arrays.to_numpy_ndarrays()
    np.testing.assert_allclose(values[0], np.full(3, 2 * STEP), rtol=1e-6)
    np.testing.assert_allclose(values[1], [2 * STEP])
    assert values[0].dtype == np.float32 and values[1].dtype == np.float64
    train = result.train_metrics_clientapp[2]
    assert train["p"] == pytest.approx(MEAN_P) and train["train_loss"] == pytest.approx(STEP)
    assert result.evaluate_metrics_clientapp[1]["eval_loss"] == pytest.approx(MEAN_P)
    assert sorted((c["server-round"], c["lr"]) for c in configs) == [(1, 0.1)] * 3 + [(2, 0.05)] * 3
    assert "starting 2 rounds from 2 arrays (4 numbers)" in caplog.text


def test_fedavgs_sampling_outside_start_takes_the_fraction_of_the_nodes() -> None:
    sent: list = []

    def main(grid, context) -> None:
        strategy = flwr_strategy.FedAvg(fraction_train=0.5, min_train_nodes=1)
        arrays = ArrayRecord([np.zeros(2)])
        messages = strategy.configure_train(3, arrays, ConfigRecord({"lr": 0.5}), grid)
        sent.extend(messages)
        assert strategy.configure_evaluate(3, arrays, ConfigRecord(), grid) != []
        none = flwr_strategy.FedAvg(fraction_evaluate=0.0)
        assert none.configure_evaluate(3, arrays, ConfigRecord(), grid) == []
        sent.append(set(grid.get_node_ids()))

    run_main(main, make_client_app(), num_nodes=4)
    *messages, nodes = sent
    assert len(messages) == 2  # int(4 × 0.5)
    assert {m.metadata.dst_node_id for m in messages} < nodes
    assert all(dict(m.content["config"]) == {"lr": 0.5, "server-round": 3} for m in messages)


def test_steps_that_need_roosts_loop_refuse_to_run_outside_it() -> None:
    arrays = ArrayRecord([np.zeros(2)])
    adam = flwr_strategy.FedAdam()
    with pytest.raises(ConfigurationError, match=r"FedAdam\.configure_train runs inside start"):
        adam.configure_train(1, arrays, ConfigRecord(), None)
    private = flwr_strategy.DifferentialPrivacyServerSideFixedClipping(
        flwr_strategy.FedAvg(), 1.0, 1.0, 2
    )
    with pytest.raises(ConfigurationError, match="it would add no privacy"):
        private.aggregate_train(1, [])


def _reply(arrays: dict, count) -> RecordDict:
    return RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": count})}
    )


def test_aggregate_arrayrecords_weights_by_the_metric_and_checks_the_replies() -> None:
    replies = [_reply({"w": np.ones(2)}, 1), _reply({"w": np.full(2, 4.0)}, 3)]
    mean = aggregate_arrayrecords(replies, "num-examples")
    np.testing.assert_allclose(mean["w"].numpy(), [3.25, 3.25])
    with pytest.raises(ConfigurationError, match="named"):
        aggregate_arrayrecords([*replies, _reply({"v": np.ones(2)}, 1)], "num-examples")
    with pytest.raises(ConfigurationError, match="no count >= 0 under 'n'"):
        aggregate_arrayrecords(replies, "n")
    with pytest.raises(ConfigurationError, match="add up to 0"):
        aggregate_arrayrecords([_reply({"w": np.ones(2)}, 0)], "num-examples")
    with alias.flower_alias():
        from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

        assert aggregate_metricrecords(replies, "num-examples") == MetricRecord({})
