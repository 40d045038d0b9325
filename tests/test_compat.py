"""`roost.compat.flwr`: Flower-shaped code runs on roost with only its imports changed."""

from __future__ import annotations

import numpy as np
import pytest
from grpc_support import run_deployed
from process_probes import remembering_client_fn

import roost
import roost.compat.flwr as fl
from roost.apps.digits import softmax
from roost.compat.flwr.client import ClientApp, NumPyClient
from roost.compat.flwr.common import (
    Context,
    Metrics,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
from roost.compat.flwr.server.strategy import FedAvg
from roost.compat.flwr.simulation import run_simulation
from roost.data import iid_partition
from roost.data.bundled_digits import load_digits_split
from roost.errors import ConfigurationError, InvalidMessageError

NUM_CLIENTS = 5


# ---- the tutorial's code, as a Flower user writes it (only the imports above differ) ---------


class SoftmaxModel:
    """Stands in for the tutorial's Keras model: get_weights / set_weights / fit / evaluate."""

    def __init__(self) -> None:
        self.weights = softmax.init_parameters(64, 10)

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def fit(self, x, y, epochs, batch_size, seed):
        self.weights = softmax.train_sgd(
            self.weights,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=0.5,
            rng=np.random.default_rng(seed),
        )

    def evaluate(self, x, y):
        return softmax.loss_and_accuracy(self.weights, x, y)


def load_data(partition_id: int):
    train, _ = load_digits_split(seed=0)
    part = iid_partition(len(train.y), NUM_CLIENTS, seed=0)[partition_id]
    split = int(len(part) * 0.9)
    return (train.x[part[:split]], train.y[part[:split]]), (
        train.x[part[split:]],
        train.y[part[split:]],
    )


class FlowerClient(NumPyClient):
    def __init__(self, model, x_train, y_train, x_val, y_val, partition_id) -> None:
        self.model = model
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self.partition_id = partition_id

    def get_parameters(self, config):
        return self.model.get_weights()

    def fit(self, parameters, config):
        self.model.set_weights(parameters)
        self.model.fit(
            self.x_train,
            self.y_train,
            epochs=1,
            batch_size=32,
            seed=[int(config.get("server_round", 0)), self.partition_id],
        )
        return self.model.get_weights(), len(self.x_train), {}

    def evaluate(self, parameters, config):
        self.model.set_weights(parameters)
        loss, accuracy = self.model.evaluate(self.x_val, self.y_val)
        return loss, len(self.x_val), {"accuracy": accuracy}


def client_fn(context: Context) -> fl.client.Client:
    partition_id = context.node_config["partition-id"]
    (x_train, y_train), (x_val, y_val) = load_data(partition_id)
    return FlowerClient(SoftmaxModel(), x_train, y_train, x_val, y_val, partition_id).to_client()


client = ClientApp(client_fn=client_fn)


def weighted_average(metrics: list[tuple[int, Metrics]]) -> Metrics:
    accuracies = [num_examples * m["accuracy"] for num_examples, m in metrics]
    examples = [num_examples for num_examples, _ in metrics]
    return {"accuracy": sum(accuracies) / sum(examples)}


def make_strategy(strategy_class=FedAvg):
    return strategy_class(
        fraction_fit=1.0,
        fraction_evaluate=0.6,
        min_fit_clients=5,
        min_evaluate_clients=3,
        min_available_clients=NUM_CLIENTS,
        evaluate_metrics_aggregation_fn=weighted_average,
        initial_parameters=ndarrays_to_parameters(SoftmaxModel().get_weights()),
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )


def server_fn(context: Context) -> ServerAppComponents:
    return ServerAppComponents(strategy=make_strategy(), config=ServerConfig(num_rounds=5))


server = ServerApp(server_fn=server_fn)

# ---- the tests --------------------------------------------------------------------------------


def test_tutorial_shaped_simulation_runs_and_learns() -> None:
    history = run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=NUM_CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1}},
        seed=0,
    )
    accuracy = history.metrics_distributed["accuracy"]
    assert [r for r, _ in accuracy] == [1, 2, 3, 4, 5]
    assert accuracy[-1][1] > 0.8
    assert accuracy[-1][1] > accuracy[0][1] + 0.4
    assert [record.fit_results for record in history.rounds] == [5] * 5
    assert [record.evaluate_results for record in history.rounds] == [3] * 5


def test_compat_run_equals_the_native_roost_run() -> None:
    """The veneer adds nothing: the same clients and strategy give the identical model."""
    compat = run_simulation(
        server_app=server, client_app=client, num_supernodes=NUM_CLIENTS, seed=3
    )
    native_strategy = roost.FedAvg(
        fraction_evaluate=0.6,
        min_fit_clients=5,
        min_evaluate_clients=3,
        min_available_clients=5,
        evaluate_metrics_aggregation_fn=weighted_average,
        initial_parameters=softmax.init_parameters(64, 10),
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )
    native = roost.run_simulation(
        client_fn,
        NUM_CLIENTS,
        strategy=native_strategy,
        config=roost.ServerConfig(num_rounds=5),
        seed=3,
    )
    for a, b in zip(compat.parameters, native.parameters, strict=True):
        np.testing.assert_array_equal(a, b)
    assert compat.losses_distributed == native.losses_distributed
    # And FedAvg is what it says: round 1 from zeros is the example-weighted mean of client models.
    start = softmax.init_parameters(64, 10)
    results = [client_fn(Context(i, NUM_CLIENTS)).fit(start, {"server_round": 1}) for i in range(5)]
    total = sum(n for _, n, _ in results)
    expected = [sum(n * p[k] for p, n, _ in results) / total for k in range(2)]
    one_round = run_simulation(
        server_app=ServerApp(config=ServerConfig(num_rounds=1), strategy=make_strategy()),
        client_app=client,
        num_supernodes=NUM_CLIENTS,
    )
    for got, want in zip(one_round.parameters, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_roost_engines_are_available_through_run_simulation() -> None:
    app = ServerApp(config=ServerConfig(num_rounds=2), strategy=make_strategy())
    sequential = run_simulation(server_app=app, client_app=client, num_supernodes=NUM_CLIENTS)
    pooled = run_simulation(
        server_app=app,
        client_app=client,
        num_supernodes=NUM_CLIENTS,
        engine="process",
        engine_options={"max_workers": 2},
    )
    for a, b in zip(sequential.parameters, pooled.parameters, strict=True):
        np.testing.assert_array_equal(a, b)  # results are summed in the cohort's order on both


@pytest.mark.parametrize(
    "options",
    [{}, {"warm_clients": True}, {"engine": "process", "engine_options": {"max_workers": 2}}],
    ids=["cold", "warm", "process"],
)
def test_an_older_form_client_keeps_its_flower_state_across_rounds(options) -> None:
    """`client_fn(context)` gets the node's state as a RecordDict, kept from round to round."""

    def fewest_fits(pairs):
        return {
            "fits": min(m["fits"] for _, m in pairs),
            "same": min(m.get("same", 1) for _, m in pairs),
        }

    app = ServerApp(
        config=ServerConfig(num_rounds=3),
        strategy=FedAvg(
            initial_parameters=ndarrays_to_parameters([np.zeros(2)]),
            fit_metrics_aggregation_fn=fewest_fits,
            evaluate_metrics_aggregation_fn=fewest_fits,
        ),
    )
    history = run_simulation(
        server_app=app,
        client_app=ClientApp(client_fn=remembering_client_fn),
        num_supernodes=3,
        **options,
    )
    assert history.metrics_distributed_fit["fits"] == [(1, 1), (2, 2), (3, 3)]
    assert history.metrics_distributed_fit["same"] == [(1, 1), (2, 1), (3, 1)]
    assert history.metrics_distributed["fits"] == [(1, 1), (2, 2), (3, 3)]


def test_warm_clients_through_run_simulation_give_the_same_model_with_fewer_builds() -> None:
    builds: list[int] = []

    def counting_client_fn(context: Context):
        builds.append(context.partition_id)
        return client_fn(context)

    counting = ClientApp(client_fn=counting_client_fn)
    cold = run_simulation(
        server_app=server, client_app=counting, num_supernodes=NUM_CLIENTS, seed=0
    )
    cold_builds, builds[:] = len(builds), []
    warm = run_simulation(
        server_app=server,
        client_app=counting,
        num_supernodes=NUM_CLIENTS,
        seed=0,
        warm_clients=True,
    )
    for a, b in zip(cold.parameters, warm.parameters, strict=True):
        np.testing.assert_array_equal(a, b)  # this client sets all its state from the instruction
    assert cold_builds == 5 * (5 + 3)  # a client per fit and per evaluation, every round
    assert sorted(builds) == list(range(NUM_CLIENTS))  # each partition's client built once


def test_weighted_average_metric_matches_hand_computation() -> None:
    assert weighted_average([(10, {"accuracy": 0.5}), (30, {"accuracy": 0.9})]) == {
        "accuracy": pytest.approx((10 * 0.5 + 30 * 0.9) / 40)
    }


def test_parameters_round_trip_without_pickle() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)]
    packed = ndarrays_to_parameters(arrays)
    assert isinstance(packed, Parameters) and all(isinstance(t, bytes) for t in packed.tensors)
    back = parameters_to_ndarrays(packed)
    for a, b in zip(arrays, back, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="allow_pickle"):
        ndarrays_to_parameters([np.array([{"a": 1}], dtype=object)])
    evil = Parameters(
        tensors=[
            b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
            b"'shape': (1,), }" + b" " * 53 + b"\n" + b"\x80\x04N."
        ]
    )
    with pytest.raises(InvalidMessageError, match="without objects"):
        parameters_to_ndarrays(evil)


def test_every_named_strategy_is_the_roost_preset_and_takes_parameters() -> None:
    import roost.strategy

    start = ndarrays_to_parameters([np.zeros(3)])
    extra = {"FedProx": {"proximal_mu": 0.1}}
    names = fl.server.strategy.NAMES  # __all__ also holds the DP wrappers (test_flower_dp)
    assert set(fl.server.strategy.__all__) == {
        *names,
        *(
            "DifferentialPrivacyServerSideFixedClipping",
            "DifferentialPrivacyClientSideFixedClipping",
        ),
        *("Strategy", "ClientFailure"),
    }
    assert {
        "FedAvg",
        "FedAvgM",
        "FedAdagrad",
        "FedAdam",
        "FedYogi",
        "FedProx",
        "FedMedian",
        "FedTrimmedAvg",
        "Krum",
    } <= set(names)
    for name in names:
        cls = getattr(fl.server.strategy, name)
        assert issubclass(cls, getattr(roost.strategy, name))
        assert issubclass(cls, fl.server.strategy.Strategy)
        strategy = cls(initial_parameters=start, inplace=False, **extra.get(name, {}))
        # Flower's signature: the client manager in, Parameters out
        initial = strategy.initialize_parameters(client_manager=None)
        np.testing.assert_array_equal(parameters_to_ndarrays(initial)[0], np.zeros(3))


def test_misuse_gets_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="ServerAppComponents"):
        run_simulation(
            server_app=ServerApp(server_fn=lambda context: "oops"),
            client_app=client,
            num_supernodes=2,
        )
    with pytest.raises(ConfigurationError, match="client managers"):
        ServerAppComponents(strategy=FedAvg(), client_manager=object())
    with pytest.raises(ConfigurationError, match="either server_fn"):
        ServerApp(server_fn=server_fn, config=ServerConfig())


def deploy(strategy, clients: dict, num_rounds: int):
    """`run_deployed` with the Flower layer's `start_server` and `start_client`."""
    pytest.importorskip("grpc")
    return run_deployed(
        strategy,
        clients,
        num_rounds,
        start_server=fl.server.start_server,
        start_client=fl.client.start_client,
    )


def test_start_server_and_start_client_deploy_over_grpc() -> None:
    clients = {str(k): client_fn(Context(k, NUM_CLIENTS)) for k in range(NUM_CLIENTS)}
    deployed = deploy(make_strategy(), clients, 2)
    simulated = run_simulation(
        server_app=ServerApp(config=ServerConfig(num_rounds=2), strategy=make_strategy()),
        client_app=client,
        num_supernodes=NUM_CLIENTS,
    )
    # Full participation and deterministic clients: the deployed model is the simulated one.
    for a, b in zip(deployed.parameters, simulated.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_deployed_older_form_client_keeps_its_flower_state() -> None:
    def fewest_fits(pairs):
        return {"fits": min(metrics["fits"] for _, metrics in pairs)}

    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(2)]),
        fraction_evaluate=0.0,
        fit_metrics_aggregation_fn=fewest_fits,
    )
    nodes = {str(k): {"client_fn": remembering_client_fn, "partition_id": k} for k in (0, 1)}
    history = deploy(strategy, nodes, 3)
    assert history.metrics_distributed_fit["fits"] == [(1, 1), (2, 2), (3, 3)]
