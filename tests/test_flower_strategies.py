"""Flower's message-based strategies and the Grid, run on roost's presets and round loop."""

from __future__ import annotations

import numpy as np
import pytest

from roost.compat.flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from roost.compat.flwr.clientapp import ClientApp, node_client
from roost.compat.flwr.project import run_apps
from roost.compat.flwr.serverapp import Grid, ServerApp
from roost.compat.flwr.serverapp import strategy as flwr_strategy
from roost.compat.flwr.serverapp.grid import RunSettings
from roost.engines import make_engine
from roost.errors import ConfigurationError

SIZES = [10, 20, 30, 40, 50]


def make_client_app(seen_configs: list[dict] | None = None) -> ClientApp:
    """Node p answers train with arrays + (p + 1) and `num-examples` SIZES[p]."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = context.node_config["partition-id"]
        if seen_configs is not None:
            seen_configs.append(dict(msg.content["config"]))
        arrays = [a + partition + 1 for a in msg.content["arrays"].to_numpy_ndarrays()]
        metrics = MetricRecord(
            {"num-examples": SIZES[partition], "train_loss": 1.0 + partition, "p": partition}
        )
        return Message(
            RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        partition = context.node_config["partition-id"]
        metrics = MetricRecord({"eval_loss": float(partition), "num-examples": SIZES[partition]})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def run_main(main, client_app: ClientApp, num_nodes: int = 3, run_config: dict | None = None):
    """Run `main(grid, context)` with `num_nodes` simulated nodes of `client_app`."""
    server_app = ServerApp()
    server_app.main()(main)
    transport = make_engine(
        "sequential",
        lambda context: node_client(client_app, context),
        num_nodes,
        run_config=run_config,
    )
    try:
        return run_apps(server_app, client_app, transport, run_config or {}, RunSettings(seed=0))
    finally:
        transport.close()


def start_with(strategy, results: list, num_rounds: int = 1, **start_options):
    def main(grid: Grid, context: Context) -> None:
        results.append(
            strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord({"w": np.zeros(3), "b": np.zeros(1)}),
                num_rounds=num_rounds,
                **start_options,
            )
        )

    return main


def test_fedavg_weights_by_num_examples_and_aggregates_metrics() -> None:
    results: list = []
    configs: list[dict] = []
    strategy = flwr_strategy.FedAvg(min_available_nodes=3, min_train_nodes=3)
    history = run_main(
        start_with(strategy, results, train_config=ConfigRecord({"lr": 0.5})),
        make_client_app(configs),
    )
    expected = sum(size * (p + 1) for p, size in enumerate(SIZES[:3])) / sum(SIZES[:3])
    result = results[0]
    assert list(result.arrays) == ["w", "b"]
    np.testing.assert_allclose(result.arrays["w"].numpy(), np.full(3, expected))
    np.testing.assert_allclose(history.parameters[0], np.full(3, expected))
    assert configs == [{"lr": 0.5, "server-round": 1}] * 3
    train_metrics = result.train_metrics_clientapp[1]
    assert "num-examples" not in train_metrics  # the weighting key itself is not averaged
    assert train_metrics["train_loss"] == pytest.approx(expected)  # 1 + p, weighted alike
    assert result.evaluate_metrics_clientapp[1]["eval_loss"] == pytest.approx(expected - 1)
    assert history.losses_distributed == [(1, pytest.approx(expected - 1))]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("FedAvgM", {"server_momentum": 0.9}),
        ("FedAdagrad", {}),
        ("FedAdam", {"eta": 0.05}),
        ("FedYogi", {}),
        ("FedProx", {"proximal_mu": 0.1}),
        ("FedMedian", {}),
        ("FedTrimmedAvg", {"beta": 0.2}),
        ("Krum", {}),
        ("MultiKrum", {"num_nodes_to_select": 2}),
        ("Bulyan", {}),
        ("QFedAvg", {"client_learning_rate": 0.1}),
    ],
)
def test_every_named_strategy_runs_on_its_roost_preset(name: str, options: dict) -> None:
    cls = getattr(flwr_strategy, name)
    results: list = []
    configs: list[dict] = []
    strategy = cls(min_available_nodes=5, min_train_nodes=5, fraction_evaluate=0.0, **options)
    history = run_main(start_with(strategy, results, num_rounds=2), make_client_app(configs), 5)
    assert len(history.rounds) == 2 and history.rounds[0].fit_results == 5
    final = results[0].arrays["w"].numpy()
    assert np.all(np.isfinite(final)) and not np.allclose(final, 0.0)
    if name == "FedProx":
        assert all(config["proximal-mu"] == 0.1 for config in configs)
    if name == "Krum":  # Krum keeps one node's model: after round 1, a whole number per entry
        assert np.allclose(final, np.round(final))
    if name == "FedMedian":  # the median of 1..5 is 3, twice
        np.testing.assert_allclose(final, np.full(3, 6.0))


def test_evaluate_fn_metrics_without_a_loss_reach_result_and_history() -> None:
    results: list = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord({"accuracy": float(server_round) / 10})

    history = run_main(
        start_with(
            flwr_strategy.FedAvg(fraction_evaluate=0.0),
            results,
            num_rounds=2,
            evaluate_fn=evaluate_fn,
        ),
        make_client_app(),
    )
    assert set(results[0].evaluate_metrics_serverapp) == {0, 1, 2}
    assert history.metrics_centralized["accuracy"] == [(0, 0.0), (1, 0.1), (2, 0.2)]


def test_replies_without_the_weighting_key_are_that_nodes_failure() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        metrics = MetricRecord(
            {} if context.node_config["partition-id"] == 0 else {"num-examples": 5}
        )
        content = RecordDict({"arrays": msg.content["arrays"], "metrics": metrics})
        return Message(content, reply_to=msg)

    results: list = []
    history = run_main(start_with(flwr_strategy.FedAvg(fraction_evaluate=0.0), results), app)
    assert history.rounds[0].fit_results == 2 and history.rounds[0].failed_clients == ["0"]


def test_an_incomplete_strategy_and_a_wrong_grid_are_refused() -> None:
    with pytest.raises(TypeError, match="abstract"):
        flwr_strategy.Strategy()
    with pytest.raises(ConfigurationError, match="Grid"):
        flwr_strategy.FedAvg().start(grid=object(), initial_arrays=ArrayRecord([np.zeros(1)]))


def test_a_main_loop_of_its_own_uses_the_grid_directly() -> None:
    app = make_client_app()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if context.node_config["partition-id"] == 1:
            raise RuntimeError("node 1 refuses")
        return Message(RecordDict({"m": MetricRecord({"node": context.node_id})}), reply_to=msg)

    seen: dict = {}

    def main(grid: Grid, context: Context) -> None:
        node_ids = grid.get_node_ids()
        messages = [Message(RecordDict(), node_id, "query", group_id="q") for node_id in node_ids]
        replies = grid.send_and_receive(messages)
        seen["ok"] = sorted(r.content["m"]["node"] for r in replies if not r.has_error())
        seen["errors"] = [r.error.reason for r in replies if r.has_error()]
        ids = grid.push_messages([Message(RecordDict(), node_ids[0], "query")])
        for _ in range(200):
            pulled = grid.pull_messages(ids)
            if pulled:
                seen["pulled"] = pulled[0].content["m"]["node"]
                break
            import time

            time.sleep(0.01)
        seen["run"] = context.run_config["flag"]

    history = run_main(main, app, num_nodes=3, run_config={"flag": 1})
    assert history.parameters is None  # no strategy ran
    assert seen["ok"] == [0, 2] and len(seen["errors"]) == 1
    assert "node 1 refuses" in seen["errors"][0]
    assert seen["pulled"] == 0 and seen["run"] == 1
