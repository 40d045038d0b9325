"""Flower's classic strategy API as people write it: a subclass of a named strategy overriding its
steps with super(), and a Strategy written from scratch, in simulation, over gRPC and resumed."""

from __future__ import annotations

import numpy as np
import pytest

import roost
import roost.compat.flwr as fl
from roost.compat.flwr.client import ClientApp, NumPyClient
from roost.compat.flwr.common import (
    Context,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.server import ServerApp, ServerConfig
from roost.compat.flwr.server.client_manager import ClientManager
from roost.compat.flwr.server.client_proxy import ClientProxy
from roost.compat.flwr.server.strategy import FedAvg, Strategy
from roost.compat.flwr.simulation import run_simulation
from roost.errors import ConfigurationError

NUM_CLIENTS = 3
START = [np.zeros(3)]


def target(partition_id: int) -> np.ndarray:
    return np.arange(3.0) + 2.0 * partition_id


def num_examples(partition_id: int) -> int:
    return 10 + 5 * partition_id


class Pull(NumPyClient):
    """Moves the model a step `lr` (from the config, default 0.5) towards its own target and
    sends back what config it received."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        lr = float(config.get("lr", 0.5))
        w = parameters[0] + lr * (target(self.partition_id) - parameters[0])
        return [w], num_examples(self.partition_id), {"lr": lr, "tag": config.get("tag", "")}

    def evaluate(self, parameters, config):
        loss = float(np.sum((parameters[0] - target(self.partition_id)) ** 2))
        return loss, num_examples(self.partition_id), {"mse": loss}


def client_fn(context: Context):
    return Pull(int(context.node_config["partition-id"])).to_client()


# -- the strategies people write ----------------------------------------------------------------


class SaveModelStrategy(FedAvg):
    """Flower's how-to: save the aggregated model every round."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.saved: dict[int, list[np.ndarray]] = {}

    def aggregate_fit(self, server_round, results, failures):
        aggregated_parameters, aggregated_metrics = super().aggregate_fit(
            server_round, results, failures
        )
        if aggregated_parameters is not None:
            self.saved[server_round] = parameters_to_ndarrays(aggregated_parameters)
        return aggregated_parameters, aggregated_metrics


class PerClientConfig(FedAvg):
    """Each client gets its own learning rate and tag; what came back is recorded."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sent: dict[tuple[int, str], dict] = {}
        self.received: dict[tuple[int, str], dict] = {}

    def configure_fit(self, server_round, parameters, client_manager):
        pairs = super().configure_fit(server_round, parameters, client_manager)
        configured = []
        for client, ins in pairs:
            config = {**ins.config, "lr": 0.2 + 0.1 * client.node_id, "tag": f"c{client.cid}"}
            self.sent[(server_round, client.cid)] = config
            configured.append((client, FitIns(ins.parameters, config)))
        return configured

    def aggregate_fit(self, server_round, results, failures):
        for client, res in results:
            self.received[(server_round, client.cid)] = dict(res.metrics)
        return super().aggregate_fit(server_round, results, failures)


class FromScratch(Strategy):
    """Flower's "implement a strategy" shape: all six methods, no built-in behind them."""

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.lr = lr

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters(START)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        clients = client_manager.sample(num_clients=NUM_CLIENTS, min_num_clients=NUM_CLIENTS)
        return [(client, FitIns(parameters, {"lr": self.lr})) for client in clients]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        total = sum(res.num_examples for _, res in results)
        mean = sum(
            parameters_to_ndarrays(res.parameters)[0] * (res.num_examples / total)
            for _, res in results
        )
        return ndarrays_to_parameters([mean]), {"clients": len(results)}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        clients = client_manager.sample(num_clients=NUM_CLIENTS, min_num_clients=NUM_CLIENTS)
        return [(client, EvaluateIns(parameters, {})) for client in clients]

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list,
    ) -> tuple[float | None, dict[str, Scalar]]:
        total = sum(res.num_examples for _, res in results)
        return sum(res.loss * res.num_examples for _, res in results) / total, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        w = parameters_to_ndarrays(parameters)[0]
        return float(np.sum(w**2)), {"norm": float(np.linalg.norm(w))}


def fedavg_kwargs() -> dict:
    return {
        "min_fit_clients": NUM_CLIENTS,
        "min_available_clients": NUM_CLIENTS,
        "min_evaluate_clients": NUM_CLIENTS,
        "initial_parameters": ndarrays_to_parameters(START),
    }


STRATEGIES = {
    "save-model": lambda: SaveModelStrategy(**fedavg_kwargs()),
    "per-client": lambda: PerClientConfig(**fedavg_kwargs()),
    "from-scratch": FromScratch,
}


def expected_model(rounds: int, lrs: dict[int, float]) -> np.ndarray:
    """The example-weighted mean of the clients' steps, written out."""
    w = START[0]
    weights = np.array([num_examples(k) for k in range(NUM_CLIENTS)], dtype=float)
    for _ in range(rounds):
        steps = [w + lrs[k] * (target(k) - w) for k in range(NUM_CLIENTS)]
        w = sum(s * (n / weights.sum()) for s, n in zip(steps, weights, strict=True))
    return w


def simulate(strategy, rounds: int, **options):
    return roost.run_simulation(
        client_fn,
        NUM_CLIENTS,
        strategy=strategy,
        config=ServerConfig(num_rounds=rounds),
        seed=0,
        **options,
    )


# -- the tests ----------------------------------------------------------------------------------


def test_save_model_strategy_runs_through_run_simulation_and_saves_each_round() -> None:
    strategy = SaveModelStrategy(**fedavg_kwargs())
    history = run_simulation(
        server_app=ServerApp(config=ServerConfig(num_rounds=3), strategy=strategy),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=NUM_CLIENTS,
        seed=0,
    )
    assert sorted(strategy.saved) == [1, 2, 3]
    np.testing.assert_array_equal(strategy.saved[3][0], history.parameters[0])
    # super().aggregate_fit is FedAvg's aggregate: the model plain FedAvg makes, bit for bit
    plain = simulate(FedAvg(**fedavg_kwargs()), 3)
    assert history.parameters[0].tobytes() == plain.parameters[0].tobytes()
    np.testing.assert_allclose(history.parameters[0], expected_model(3, {k: 0.5 for k in range(3)}))


def test_per_client_configs_arrive_as_sent_and_shape_the_model() -> None:
    strategy = PerClientConfig(**fedavg_kwargs())
    history = simulate(strategy, 2)
    assert len(strategy.sent) == 2 * NUM_CLIENTS
    for key, config in strategy.sent.items():
        assert strategy.received[key] == {"lr": config["lr"], "tag": config["tag"]}
    lrs = {k: 0.2 + 0.1 * k for k in range(NUM_CLIENTS)}
    np.testing.assert_allclose(history.parameters[0], expected_model(2, lrs), rtol=1e-12)


def test_a_strategy_written_from_scratch_runs_all_six_steps() -> None:
    history = simulate(FromScratch(), 3)
    w = expected_model(3, {k: 0.5 for k in range(3)})
    np.testing.assert_allclose(history.parameters[0], w, rtol=1e-12)
    assert [r for r, _ in history.losses_centralized] == [0, 1, 2, 3]
    assert history.losses_centralized[-1][1] == pytest.approx(float(np.sum(w**2)))
    assert [r for r, _ in history.losses_distributed] == [1, 2, 3]
    assert history.metrics_distributed_fit["clients"] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_resumed_run_ends_with_the_uninterrupted_model(tmp_path, name) -> None:
    whole = simulate(STRATEGIES[name](), 3)
    simulate(STRATEGIES[name](), 2, state_dir=tmp_path)
    resumed = simulate(STRATEGIES[name](), 3, state_dir=tmp_path, resume=True)
    assert resumed.parameters[0].tobytes() == whole.parameters[0].tobytes()
    assert resumed.losses_distributed == whole.losses_distributed


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_over_grpc_the_model_is_the_simulated_one(tmp_path, name) -> None:
    from grpc_support import run_deployed

    clients = {str(k): Pull(k).to_client() for k in range(NUM_CLIENTS)}
    simulated = simulate(STRATEGIES[name](), 2)
    strategy = STRATEGIES[name]()
    deployed = run_deployed(
        strategy,
        clients,
        2,
        start_server=fl.server.start_server,
        start_client=fl.client.start_client,
    )
    np.testing.assert_allclose(deployed.parameters[0], simulated.parameters[0], rtol=1e-12)
    if name == "per-client":
        for key, config in strategy.sent.items():
            assert strategy.received[key] == {"lr": config["lr"], "tag": config["tag"]}


def test_built_in_steps_outside_a_round_say_where_they_run() -> None:
    with pytest.raises(ConfigurationError, match="inside a round"):
        FedAvg().aggregate_fit(1, [], [])


def test_a_strategy_missing_a_step_is_refused_as_on_flower() -> None:
    class Half(Strategy):
        def initialize_parameters(self, client_manager):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half()


@pytest.mark.slow  # starts worker processes
def test_per_client_configs_on_the_process_engine() -> None:
    strategy = PerClientConfig(**fedavg_kwargs())
    history = simulate(strategy, 2, engine="process")
    for key, config in strategy.sent.items():
        assert strategy.received[key] == {"lr": config["lr"], "tag": config["tag"]}
    lrs = {k: 0.2 + 0.1 * k for k in range(NUM_CLIENTS)}
    np.testing.assert_allclose(history.parameters[0], expected_model(2, lrs), rtol=1e-12)


def test_overridden_steps_refuse_secure_aggregation_rather_than_drop_it() -> None:
    from roost.strategy.secure import SecureAggregation

    strategy = SaveModelStrategy(**fedavg_kwargs(), secure_aggregation=SecureAggregation())
    with pytest.raises(ConfigurationError, match="secure aggregation would hide"):
        simulate(strategy, 1)


def test_the_client_manager_samples_with_the_generator_it_is_given() -> None:
    from roost.compat.flwr.server.client_manager import SimpleClientManager
    from roost.compat.flwr.server.criterion import Criterion

    class EvenOnly(Criterion):
        def select(self, client: ClientProxy) -> bool:
            return client.node_id % 2 == 0

    def manager(seed: int) -> SimpleClientManager:
        made = SimpleClientManager(rng=np.random.default_rng(seed))
        for cid in range(6):
            assert made.register(ClientProxy(str(cid)))
        return made

    first = [c.cid for c in manager(3).sample(3)]
    assert first == [c.cid for c in manager(3).sample(3)]  # seeded: the same draw
    assert len(set(first)) == 3 and manager(0).num_available() == 6
    assert {c.cid for c in manager(1).sample(3, criterion=EvenOnly())} == {"0", "2", "4"}
    assert manager(1).sample(4, criterion=EvenOnly()) == []  # fewer than asked for: none
