"""Flower's legacy workflows on roost: `LegacyContext` + `DefaultWorkflow` (+ `SecAggPlusWorkflow`)
driving `ClientApp(client_fn=..., mods=[...])` nodes, as Flower's SecAgg+ and DP examples do."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest

from roost.compat.flwr.clientapp import ClientApp
from roost.compat.flwr.clientapp.mod import fixedclipping_mod
from roost.compat.flwr.clientapp.modded import ModdedClient
from roost.compat.flwr.message import Context, Error, Message, MessageType
from roost.compat.flwr.project import run_project
from roost.compat.flwr.records import RecordDict
from roost.compat.flwr.server.workflow import DefaultWorkflow, LegacyContext, SecAggPlusWorkflow
from roost.errors import ConfigurationError, InvalidMessageError
from roost.secagg import SecAggParameters
from roost.secagg.quantize import Quantizer

_SERVER = """
    import numpy as np
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_evaluate=0.0,
            min_fit_clients=4,
            min_available_clients=4,
            initial_parameters=ndarrays_to_parameters([np.zeros(3)]),
        )
        context = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        secure = context.run_config["secure"]
        fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if secure else None
        DefaultWorkflow(fit_workflow=fit)(grid, context)
"""

_CLIENT = """
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context

    class Client(NumPyClient):
        def __init__(self, partition_id):
            self.partition_id = partition_id

        def fit(self, parameters, config):
            # float32 replies to a float64 model, as scikit-learn's can be
            update = np.array([0.1, -0.2, 0.3]) * (self.partition_id + 1)
            return [(parameters[0] + update).astype(np.float32)], 10, {}

        def evaluate(self, parameters, config):
            return 0.0, 10, {}

    def client_fn(context: Context):
        return Client(context.node_config["partition-id"]).to_client()

    app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
"""


def _project(root: Path, secure: bool) -> Path:
    package = root / "wf_app"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(textwrap.dedent(_SERVER))
    (package / "client_app.py").write_text(textwrap.dedent(_CLIENT))
    (root / "pyproject.toml").write_text(
        "[tool.flwr.app.components]\n"
        'serverapp = "wf_app.server_app:app"\nclientapp = "wf_app.client_app:app"\n'
        f"[tool.flwr.app.config]\nsecure = {str(secure).lower()}\n"
    )
    return root


@pytest.mark.parametrize("secure", [False, True])
def test_default_workflow_runs_a_classic_strategy_with_or_without_secagg(
    tmp_path: Path, secure: bool, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="roost")
    history = run_project(_project(tmp_path, secure), num_nodes=4, seed=0)
    expected = np.array([0.1, -0.2, 0.3]) * 2.5  # the mean of the four clients' updates
    (model,) = history.parameters
    assert model.dtype == np.float64  # the float32 replies were cast to the model's dtype
    # In the clear: float32's rounding only; with SecAgg+ also its stochastic rounding: under one
    # level of each of 4 weighted values (10 examples each; Flower's clip 8, max_weight 1000).
    level = Quantizer(8.0 * 1000.0, 4, 32).step
    np.testing.assert_allclose(model, expected, atol=1e-6 + (2 * level / 10 if secure else 0))
    assert history.rounds[0].fit_results == 4
    assert ("secagg_unmask_round 1 received 4 results" in caplog.text) == secure


def test_secagg_plus_workflow_maps_flowers_shares_onto_roosts_graph() -> None:
    graph = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2).secure_aggregation.graph
    assert graph(5) == SecAggParameters(degree=2, threshold=2)
    assert graph(2) == SecAggParameters(degree=1, threshold=2)  # fewer clients than shares
    fractions = SecAggPlusWorkflow(num_shares=0.5, reconstruction_threshold=0.6)
    assert fractions.secure_aggregation.graph(10) == SecAggParameters(degree=4, threshold=3)
    # Flower's 4 of 7 shares on an odd cohort of 9: no 6-regular graph problem; on 7 clients
    # with 4 shares (3 neighbours, odd) one neighbour more.
    assert SecAggPlusWorkflow(7, 4).secure_aggregation.graph(9) == SecAggParameters(6, 4)
    assert SecAggPlusWorkflow(4, 3).secure_aggregation.graph(7) == SecAggParameters(4, 3)
    with pytest.raises(ConfigurationError, match="more than half"):
        SecAggPlusWorkflow(num_shares=5, reconstruction_threshold=2).secure_aggregation.graph(9)
    with pytest.raises(ConfigurationError, match="power of two"):
        SecAggPlusWorkflow(3, 2, modulus_range=1000)
    with pytest.raises(ConfigurationError, match="num_shares"):
        SecAggPlusWorkflow(0, 2)


def test_legacy_context_and_default_workflow_refuse_what_roost_lacks() -> None:
    context = Context(1, 0, {}, RecordDict(), {"lr": 0.1})
    legacy = LegacyContext(context=context)
    assert legacy.run_config == {"lr": 0.1} and legacy.config.num_rounds == 1
    with pytest.raises(ConfigurationError, match="client manager"):
        LegacyContext(context=context, client_manager=object())
    with pytest.raises(ConfigurationError, match="classic strategy"):
        LegacyContext(context=context, strategy=object())
    with pytest.raises(ConfigurationError, match="needs a LegacyContext"):
        DefaultWorkflow()(None, context)
    with pytest.raises(ConfigurationError, match="evaluate_workflow"):
        DefaultWorkflow(evaluate_workflow=object())


class _Shift:
    """A NumPy client whose update is +`step` on every entry."""

    def __init__(self, step: float) -> None:
        self.step = step

    def fit(self, parameters, config):
        return [parameters[0] + self.step], 7, {"note": "text", "seen": config.get("k", 0)}

    def evaluate(self, parameters, config):
        return 0.25, 3, {"acc": 0.5}


def _modded(step: float, mods) -> ModdedClient:
    app = ClientApp(client_fn=lambda context: _Shift(step), mods=mods)
    return ModdedClient(app.client_fn(None), app.mods, Context(1, 3, {}, RecordDict(), {}))


def test_client_fn_apps_run_fit_and_evaluate_through_their_mods() -> None:
    seen: list[str] = []

    def record(msg: Message, context: Context, call_next):
        seen.append(msg.metadata.message_type)
        reply = call_next(msg, context)
        seen.append(sorted(reply.content.keys()))
        return reply

    client = _modded(10.0, [record, fixedclipping_mod])
    # fixedclipping_mod clips the update (+10 on 4 entries, norm 20) to the server's norm 2
    arrays, count, metrics = client.fit([np.zeros(4)], {"clipping_norm": 2.0, "k": 5})
    np.testing.assert_allclose(arrays[0], np.full(4, 1.0))
    assert (count, metrics) == (7, {"note": "text", "seen": 5})
    assert client.evaluate([np.zeros(4)], {}) == (0.25, 3, {"acc": 0.5})
    assert seen == [
        MessageType.TRAIN,
        ["arrays", "fitres", "metrics"],
        MessageType.EVALUATE,
        ["evaluateres", "metrics"],
    ]


def test_a_mod_that_refuses_fails_the_node_with_its_reason() -> None:
    def refuse(msg: Message, context: Context, call_next):
        return Message(Error(6, "no budget left"), reply_to=msg)

    with pytest.raises(InvalidMessageError, match="no budget left"):
        _modded(1.0, [refuse]).fit([np.zeros(2)], {})
    # fixedclipping_mod without the server's clipping norm says what to wrap
    with pytest.raises(InvalidMessageError, match="DifferentialPrivacyClientSideFixedClipping"):
        _modded(1.0, [fixedclipping_mod]).fit([np.zeros(2)], {})


def test_run_simulation_passes_a_client_fn_apps_calls_through_its_mods() -> None:
    from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from roost.compat.flwr.server.strategy import FedAvg
    from roost.compat.flwr.simulation import run_simulation

    seen: list[str] = []

    def count(msg: Message, context: Context, call_next):
        seen.append(f"{msg.metadata.message_type} {context.node_id}")
        return call_next(msg, context)

    strategy = FedAvg(initial_parameters=[np.zeros(2)], fraction_evaluate=0.0)
    history = run_simulation(
        server_app=ServerApp(
            server_fn=lambda context: ServerAppComponents(
                strategy=strategy, config=ServerConfig(num_rounds=1)
            )
        ),
        client_app=ClientApp(client_fn=lambda context: _Shift(1.0), mods=[count]),
        num_supernodes=2,
    )
    assert sorted(seen) == ["train 0", "train 1"]
    np.testing.assert_allclose(history.parameters[0], np.ones(2))


def test_what_a_mod_leaves_in_the_nodes_state_is_kept_across_rounds() -> None:
    from roost.compat.flwr.records import MetricRecord
    from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from roost.compat.flwr.server.strategy import FedAvg
    from roost.compat.flwr.simulation import run_simulation

    counts: list[tuple[int, int]] = []

    def count_after(msg: Message, context: Context, call_next):
        reply = call_next(msg, context)  # written after the client answered
        record = context.state.metric_records.get("mod", MetricRecord({"n": 0}))
        record["n"] += 1
        context.state["mod"] = record
        counts.append((context.node_id, record["n"]))
        return reply

    strategy = FedAvg(
        initial_parameters=[np.zeros(2)],
        fraction_evaluate=0.0,
        min_fit_clients=1,
        min_available_clients=1,
    )
    run_simulation(
        server_app=ServerApp(
            server_fn=lambda context: ServerAppComponents(
                strategy=strategy, config=ServerConfig(num_rounds=3)
            )
        ),
        client_app=ClientApp(client_fn=lambda context: _Shift(1.0), mods=[count_after]),
        num_supernodes=1,
    )
    assert counts == [(0, 1), (0, 2), (0, 3)]


_PUSHING_SERVER = """
    from flwr.app import Message, RecordDict
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context):
        nodes = grid.get_node_ids()
        grid.push_messages([Message(RecordDict(), node, "train") for node in nodes])
"""

_SLOW_CLIENT = """
    import time
    from flwr.app import Message, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()
    answered = []

    @app.train()
    def train(msg, context):
        time.sleep(0.2)
        answered.append(context.node_id)
        return Message(RecordDict(), reply_to=msg)
"""


def test_messages_pushed_and_never_pulled_reach_their_nodes_before_the_run_ends(
    tmp_path: Path,
) -> None:
    import sys

    package = tmp_path / "push_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(textwrap.dedent(_PUSHING_SERVER))
    (package / "client_app.py").write_text(textwrap.dedent(_SLOW_CLIENT))
    (tmp_path / "pyproject.toml").write_text(
        "[tool.flwr.app.components]\n"
        'serverapp = "push_app.server_app:app"\nclientapp = "push_app.client_app:app"\n'
    )
    run_project(tmp_path, num_nodes=2)
    assert sorted(sys.modules["push_app.client_app"].answered) == [0, 1]


def test_noise_on_the_aggregate_runs_under_secure_aggregation() -> None:
    # Flower's DP wrappers add their noise to the aggregate, which SecAgg+ reveals: clients have
    # nothing to do for it, so the two combine (Flower's fl-dp-sa example).
    import roost
    from roost.compat.flwr.dp import AggregateNoise

    strategy = roost.FedAvg(
        initial_parameters=[np.zeros(3)],
        fraction_evaluate=0.0,
        update_transforms=(AggregateNoise(0.0),),
        secure_aggregation=SecAggPlusWorkflow(3, 2).secure_aggregation,
    )
    history = roost.run_simulation(
        lambda context: _Shift(0.5),
        num_clients=3,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=1),
    )
    assert history.rounds[0].fit_results == 3
    # Stochastic rounding moves each client's weighted value by less than one level (7 examples
    # each, clip range 8, Flower's max_weight 1000, 32 bits); twice that covers the weight's own.
    level = Quantizer(8.0 * 1000.0, 3, 32).step
    np.testing.assert_allclose(history.parameters[0], np.full(3, 0.5), atol=2 * level / 7)
