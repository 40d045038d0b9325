"""A Message-API FedAvg subclass overriding configure_train and aggregate_train (with super()), as
a Flower project: in simulation, over gRPC, and resumed from a checkpoint."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_flower_apps import run_over_grpc

from roost.compat.flwr.project import run_project

SIZES = (10, 20, 30)

SERVER = """
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    class PerNodeFedAvg(FedAvg):
        '''Each node its own learning rate; the replies checked against what was sent.'''

        sent = {}

        def configure_train(self, server_round, arrays, config, grid):
            messages = []
            for message in super().configure_train(server_round, arrays, config, grid):
                node = message.metadata.dst_node_id
                own = ConfigRecord({**message.content["config"], "lr": 0.2 + 0.1 * node})
                content = RecordDict({"arrays": message.content["arrays"], "config": own})
                self.sent[node] = own["lr"]
                messages.append(Message(content, node, message.metadata.message_type))
            return messages

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            mismatches = sum(
                reply.content["metrics"]["lr"] != self.sent[reply.metadata.src_node_id]
                for reply in replies
            )
            arrays, metrics = super().aggregate_train(server_round, replies)
            metrics = MetricRecord({**(metrics or {}), "mismatches": mismatches,
                                    "round": server_round})
            return arrays, metrics

    app = ServerApp()

    @app.main()
    def main(grid, context):
        strategy = PerNodeFedAvg(min_train_nodes=3, min_available_nodes=3, fraction_evaluate=0.0)
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"w": np.zeros(3)}),
                       num_rounds=context.run_config["rounds"])
"""

CLIENT = """
    import numpy as np
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    SIZES = (10, 20, 30)
    app = ClientApp()

    @app.train()
    def train(msg, context):
        p = context.node_config["partition-id"]
        lr = msg.content["config"]["lr"]
        w = msg.content["arrays"]["w"].numpy()
        target = np.arange(3.0) + 2.0 * p
        metrics = MetricRecord({"num-examples": SIZES[p], "lr": lr})
        content = RecordDict({"arrays": ArrayRecord({"w": w + lr * (target - w)}),
                              "metrics": metrics})
        return Message(content, reply_to=msg)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("steps")
    package = root / "steps_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(textwrap.dedent(SERVER))
    (package / "client_app.py").write_text(textwrap.dedent(CLIENT))
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.flwr.app.components]
            serverapp = "steps_app.server_app:app"
            clientapp = "steps_app.client_app:app"
            [tool.flwr.app.config]
            rounds = 3
            """
        )
    )
    return root


def expected_model(rounds: int) -> np.ndarray:
    """Node p steps with lr 0.2 + 0.1·p; FedAvg weighs the steps by num-examples."""
    w = np.zeros(3)
    for _ in range(rounds):
        steps = [w + (0.2 + 0.1 * p) * (np.arange(3.0) + 2.0 * p - w) for p in range(3)]
        w = sum(s * (n / sum(SIZES)) for s, n in zip(steps, SIZES, strict=True))
    return w


def check(history, rounds: int = 3) -> None:
    np.testing.assert_allclose(history.parameters[0], expected_model(rounds), rtol=1e-12)
    assert history.metrics_distributed_fit["mismatches"] == [(r, 0) for r in range(1, rounds + 1)]
    assert history.metrics_distributed_fit["round"] == [(r, r) for r in range(1, rounds + 1)]


def test_overridden_steps_run_in_simulation(project: Path) -> None:
    check(run_project(project, num_nodes=3, seed=0))


def test_overridden_steps_run_over_grpc(project: Path) -> None:
    check(run_over_grpc(project, num_nodes=3, seed=0))


def test_overridden_steps_resume_to_the_uninterrupted_model(project: Path, tmp_path) -> None:
    whole = run_project(project, num_nodes=3, seed=0)
    state = tmp_path / "state"
    run_project(project, num_nodes=3, seed=0, run_config_overrides={"rounds": 2}, state_dir=state)
    resumed = run_project(project, num_nodes=3, seed=0, state_dir=state, resume=True)
    assert resumed.parameters[0].tobytes() == whole.parameters[0].tobytes()
    check(resumed)


def test_a_message_strategy_written_from_scratch_runs_its_steps() -> None:
    from test_flower_strategies import make_client_app, run_main

    from roost.compat.flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from roost.compat.flwr.message import MessageType
    from roost.compat.flwr.serverapp import strategy as flwr_strategy

    class Mean(flwr_strategy.Strategy):
        """Every node trains; the plain (unweighted) mean of their arrays is the next model."""

        def configure_train(self, server_round, arrays, config, grid):
            content = RecordDict({"arrays": arrays, "config": config})
            return [Message(content, node, MessageType.TRAIN) for node in grid.get_node_ids()]

        def aggregate_train(self, server_round, replies):
            arrays = [r.content["arrays"].to_numpy_ndarrays() for r in replies]
            mean = [np.mean(layer, axis=0) for layer in zip(*arrays, strict=True)]
            return ArrayRecord({"w": mean[0], "b": mean[1]}), MetricRecord({"n": len(arrays)})

        def configure_evaluate(self, server_round, arrays, config, grid):
            return []

        def aggregate_evaluate(self, server_round, replies):
            return None

        def summary(self) -> None:
            pass

    results: list = []

    def main(grid, context) -> None:
        initial = ArrayRecord({"w": np.zeros(3), "b": np.zeros(1)})
        results.append(Mean().start(grid=grid, initial_arrays=initial, num_rounds=2))

    history = run_main(main, make_client_app(), 3)
    # node p adds p + 1 to every array: the unweighted mean adds 2 per round (FedAvg's weights,
    # num-examples 10, 20, 30, would add 7/3)
    np.testing.assert_allclose(results[0].arrays["w"].numpy(), np.full(3, 4.0))
    assert history.metrics_distributed_fit["n"] == [(1, 3), (2, 3)]
