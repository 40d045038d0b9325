"""FedAdagrad, FedAdam and FedYogi: Flower's arithmetic in both Flower layers, Reddi et al.'s in
roost's presets unless asked, each against its formulas written out in NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import roost
import roost.compat.flwr as fl
from roost.compat.flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from roost.compat.flwr.clientapp import ClientApp, node_client
from roost.compat.flwr.project import run_apps
from roost.compat.flwr.serverapp import Grid, ServerApp
from roost.compat.flwr.serverapp import strategy as message_strategy
from roost.compat.flwr.serverapp.grid import RunSettings
from roost.engines import make_engine
from roost.errors import ConfigurationError

ROUNDS = 5
SIZES = (10, 25, 40)
SETTINGS = {
    "FedAdagrad": {"eta": 0.1, "tau": 1e-3},
    "FedAdam": {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3},
    "FedYogi": {"eta": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3},
}


def target(p: int) -> np.ndarray:
    return np.array([1.0, -2.0, 0.5]) * (p + 1)


def local_step(w: np.ndarray, p: int) -> np.ndarray:
    return w + 0.5 * (target(p) - w)


def fedavg(w: np.ndarray) -> np.ndarray:
    total = sum(SIZES)
    return sum(local_step(w, p) * (n / total) for p, n in enumerate(SIZES))


def flower_reference(name: str, eta, tau, beta_1=0.0, beta_2=0.0) -> np.ndarray:
    """Flower's FedOpt family: m and v start at 0; FedAdam scales η by its round's bias terms."""
    w, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for server_round in range(1, ROUNDS + 1):
        d = fedavg(w) - w
        m = beta_1 * m + (1 - beta_1) * d
        if name == "FedAdagrad":
            v = v + d**2
        elif name == "FedAdam":
            v = beta_2 * v + (1 - beta_2) * d**2
        else:
            v = v - (1 - beta_2) * d**2 * np.sign(v - d**2)
        step = eta
        if name == "FedAdam":
            t = server_round + 1.0
            step = eta * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w + step * m / (np.sqrt(v) + tau)
    return w


def reddi_reference(name: str, eta, tau, beta_1=0.0, beta_2=0.0) -> np.ndarray:
    """Reddi et al. (2020), Algorithm 2: v starts at τ², no bias correction."""
    w, m, v = np.zeros(3), np.zeros(3), np.full(3, tau**2)
    for _ in range(ROUNDS):
        d = fedavg(w) - w
        m = beta_1 * m + (1 - beta_1) * d
        if name == "FedAdagrad":
            v = v + d**2
        elif name == "FedAdam":
            v = beta_2 * v + (1 - beta_2) * d**2
        else:
            v = v - (1 - beta_2) * d**2 * np.sign(v - d**2)
        w = w + eta * m / (np.sqrt(v) + tau)
    return w


class Pull(roost.Client):
    def __init__(self, p: int) -> None:
        self.p = p

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        return [local_step(parameters[0], self.p)], SIZES[self.p], {}

    def evaluate(self, parameters, config):
        return 0.0, SIZES[self.p], {}


def simulate(strategy) -> np.ndarray:
    history = roost.run_simulation(
        lambda context: Pull(context.partition_id),
        len(SIZES),
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=ROUNDS),
        seed=0,
    )
    return history.parameters[0]


KNOBS = {"min_fit_clients": 3, "min_available_clients": 3, "fraction_evaluate": 0.0}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_classic_layer_follows_flowers_formulas(name: str) -> None:
    cls = getattr(fl.server.strategy, name)
    strategy = cls(initial_parameters=[np.zeros(3)], **KNOBS, **SETTINGS[name])
    np.testing.assert_allclose(
        simulate(strategy), flower_reference(name, **SETTINGS[name]), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_roost_presets_follow_reddi_unless_asked_for_flowers(name: str) -> None:
    cls = getattr(roost.strategy, name)
    reddi = simulate(cls(initial_parameters=[np.zeros(3)], **KNOBS, **SETTINGS[name]))
    np.testing.assert_allclose(reddi, reddi_reference(name, **SETTINGS[name]), rtol=0, atol=1e-12)
    flower = simulate(
        cls(initial_parameters=[np.zeros(3)], convention="flower", **KNOBS, **SETTINGS[name])
    )
    np.testing.assert_allclose(flower, flower_reference(name, **SETTINGS[name]), rtol=0, atol=1e-12)
    # The two conventions really differ (for Adagrad and Yogi only by v₀ = τ² against 0).
    assert np.max(np.abs(reddi - flower)) > 1e-8


def message_client_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        p = context.node_config["partition-id"]
        w = msg.content["arrays"]["w"].numpy()
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": local_step(w, p)}),
                "metrics": MetricRecord({"num-examples": SIZES[p]}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def run_message_strategy(strategy) -> np.ndarray:
    results: list = []

    def main(grid: Grid, context: Context) -> None:
        initial = ArrayRecord({"w": np.zeros(3)})
        results.append(strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS))

    server_app = ServerApp()
    server_app.main()(main)
    client_app = message_client_app()
    transport = make_engine(
        "sequential", lambda context: node_client(client_app, context), len(SIZES)
    )
    try:
        run_apps(server_app, client_app, transport, {}, RunSettings(seed=0))
    finally:
        transport.close()
    return results[0].arrays["w"].numpy()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_message_api_layer_follows_flowers_formulas(name: str) -> None:
    cls = getattr(message_strategy, name)
    strategy = cls(
        min_available_nodes=3, min_train_nodes=3, fraction_evaluate=0.0, **SETTINGS[name]
    )
    np.testing.assert_allclose(
        run_message_strategy(strategy), flower_reference(name, **SETTINGS[name]), rtol=0, atol=1e-12
    )


def test_an_unknown_convention_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"'reddi'.*'flower'"):
        roost.strategy.FedAdam(convention="kingma")
