"""Personalization with FedPer: shared layers are federated, each client's head never leaves it.

On a Dirichlet(α = 0.1) split of scikit-learn's digits each client sees a few classes only, so one
global model fits no client well. FedPer (Arivazhagan et al., 2019) federates the body of the
network and keeps the last layer — the head — on the client, in `context.state`, which roost keeps
for each node across rounds (on the sequential, process and Ray engines, and in a deployed client
process). This script trains the same two-layer network both ways and prints each client's test
accuracy under FedAvg (everything shared) and under FedPer (the head kept local).

    python examples/personalization/fedper.py [--rounds 30] [--clients 10] [--alpha 0.1]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np

import roost
from roost.client.client import client_rng
from roost.core.config_keys import SERVER_ROUND
from roost.data.bundled_digits import load_digits_split
from roost.data.partition import dirichlet_partition
from roost.log import ensure_logging
from roost.metrics import weighted_average

NUM_FEATURES, HIDDEN, NUM_CLASSES = 64, 32, 10


def initial_layers(seed: int) -> list[np.ndarray]:
    """[W1, b1, W2, b2], Glorot-uniform weights and zero biases."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in ((NUM_FEATURES, HIDDEN), (HIDDEN, NUM_CLASSES)):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        layers += [rng.uniform(-bound, bound, (fan_in, fan_out)), np.zeros(fan_out)]
    return layers


def forward(layers: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hidden activations, class probabilities)."""
    w1, b1, w2, b2 = layers
    hidden = np.maximum(x @ w1 + b1, 0.0)
    logits = hidden @ w2 + b2
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return hidden, exp / exp.sum(axis=1, keepdims=True)


def sgd(layers, x, y, *, epochs: int, lr: float, batch_size: int, rng) -> list[np.ndarray]:
    """Mini-batch SGD on the cross-entropy; returns the trained layers (new arrays)."""
    w1, b1, w2, b2 = (array.copy() for array in layers)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            hidden, probabilities = forward([w1, b1, w2, b2], x[batch])
            probabilities[np.arange(len(batch)), y[batch]] -= 1.0
            grad_logits = probabilities / len(batch)
            grad_hidden = (grad_logits @ w2.T) * (hidden > 0)
            w2 -= lr * hidden.T @ grad_logits
            b2 -= lr * grad_logits.sum(axis=0)
            w1 -= lr * x[batch].T @ grad_hidden
            b1 -= lr * grad_hidden.sum(axis=0)
    return [w1, b1, w2, b2]


def accuracy(layers: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(forward(layers, x)[1].argmax(axis=1) == y))


@dataclass(frozen=True)
class ClientData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def client_data(partition_id: int, num_clients: int, alpha: float, seed: int) -> ClientData:
    """Client `partition_id`'s label-skewed share of all the digits, 75 % train / 25 % test
    (both from the same few classes: the client's own distribution)."""
    train, test = load_digits_split(seed=seed)
    x, y = np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y])
    part = dirichlet_partition(y, num_clients, alpha, min_size=20, seed=seed)[partition_id]
    part = np.random.default_rng([seed, partition_id]).permutation(part)
    cut = int(len(part) * 0.75)
    return ClientData(x[part[:cut]], y[part[:cut]], x[part[cut:]], y[part[cut:]])


class PersonalClient(roost.Client):
    """Trains the whole network; with `personal`, sends only the body [W1, b1] and keeps its head
    [W2, b2] in `context.state`, where roost keeps it for this node until its next instruction."""

    def __init__(self, context: roost.Context, settings: Settings) -> None:
        self.partition_id = context.partition_id
        self.settings = settings
        self.state = context.state
        self.data = client_data(
            context.partition_id, context.num_partitions, settings.alpha, settings.seed
        )

    def _head(self) -> list[np.ndarray]:
        # Before its first round a client starts its head from the same seeded weights as all.
        return self.state.get("head") or initial_layers(self.settings.seed)[2:]

    def _layers(self, parameters: list[np.ndarray]) -> list[np.ndarray]:
        return [*parameters, *self._head()] if self.settings.personal else list(parameters)

    def get_parameters(self, config):
        layers = initial_layers(self.settings.seed)
        return layers[:2] if self.settings.personal else layers

    def fit(self, parameters, config):
        rng = client_rng(self.settings.seed, int(config[SERVER_ROUND]), self.partition_id)
        data, s = self.data, self.settings
        layers = sgd(
            self._layers(parameters), data.x_train, data.y_train,
            epochs=s.local_epochs, lr=s.learning_rate, batch_size=16, rng=rng,
        )  # fmt: skip
        if s.personal:
            self.state["head"] = layers[2:]  # stays on this client
            return layers[:2], len(data.y_train), {}
        return layers, len(data.y_train), {}

    def evaluate(self, parameters, config):
        value = accuracy(self._layers(parameters), self.data.x_test, self.data.y_test)
        metrics = {"accuracy": value, f"client_{self.partition_id}": value}
        return 1.0 - value, len(self.data.y_test), metrics


@dataclass(frozen=True)
class Settings:
    personal: bool
    alpha: float = 0.1
    seed: int = 0
    local_epochs: int = 2
    learning_rate: float = 0.1


@dataclass(frozen=True)
class PersonalClientFn:
    """A picklable `client_fn`, so the process and Ray engines can run it too."""

    settings: Settings

    def __call__(self, context: roost.Context) -> PersonalClient:
        return PersonalClient(context, self.settings)


def per_client_accuracy(pairs: list[tuple[int, roost.Metrics]]) -> roost.Metrics:
    """The weighted mean accuracy, and every client's own (`client_ID` keys)."""
    merged = weighted_average([(n, {"accuracy": m["accuracy"]}) for n, m in pairs])
    for _, metrics in pairs:
        merged.update({k: v for k, v in metrics.items() if k.startswith("client_")})
    return merged


def round_config(server_round: int) -> roost.Config:
    """The round goes to every client with its instruction: it seeds local shuffling."""
    return {SERVER_ROUND: server_round}


def train(settings: Settings, *, clients: int, rounds: int, engine: str) -> dict[int, float]:
    """Each client's test accuracy after the last round."""
    strategy = roost.FedAvg(
        min_fit_clients=clients,
        min_available_clients=clients,
        on_fit_config_fn=round_config,
        evaluate_metrics_aggregation_fn=per_client_accuracy,
    )
    history = roost.run_simulation(
        PersonalClientFn(settings),
        clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=settings.seed,
        engine=engine,
    )
    return {
        client: history.metrics_distributed[f"client_{client}"][-1][1] for client in range(clients)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default="sequential", help="sequential, process or ray")
    args = parser.parse_args()
    ensure_logging(logging.WARNING)  # the table below is the output; warnings still show
    results = {}
    for personal in (False, True):
        settings = Settings(personal=personal, alpha=args.alpha, seed=args.seed)
        results[personal] = train(
            settings, clients=args.clients, rounds=args.rounds, engine=args.engine
        )
    print("| client | test examples | FedAvg | FedPer | gain |")
    print("|---:|---:|---:|---:|---:|")
    for client in range(args.clients):
        size = len(client_data(client, args.clients, args.alpha, args.seed).y_test)
        fedavg, fedper = results[False][client], results[True][client]
        print(f"| {client} | {size} | {fedavg:.3f} | {fedper:.3f} | {fedper - fedavg:+.3f} |")
    mean = {personal: float(np.mean(list(r.values()))) for personal, r in results.items()}
    print(f"| mean | | {mean[False]:.3f} | {mean[True]:.3f} | {mean[True] - mean[False]:+.3f} |")


if __name__ == "__main__":
    main()
