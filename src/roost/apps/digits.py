"""The bundled demo: softmax regression on scikit-learn's digits, split IID across clients.

`roost simulate` runs it with no arguments; `roost server` / `roost client` deploy it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roost.apps import softmax
from roost.client.client import Client, Context
from roost.core.types import Config, Metrics, Parameters
from roost.data.digits import Split, load_digits_split
from roost.data.partition import iid_partition
from roost.errors import ConfigurationError
from roost.metrics import weighted_average
from roost.strategy.presets import FedAvg

NUM_FEATURES = 64
NUM_CLASSES = 10
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class DemoSettings:
    """Knobs of the digits demo (the CLI options map onto these)."""

    num_clients: int = 10
    num_rounds: int = 5
    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.5
    seed: int = 0


def check_settings(settings: DemoSettings) -> None:
    """Refuse settings the demo cannot run, before any client is built."""
    train, _ = load_digits_split(seed=settings.seed)
    # Each client keeps 10 % of its share for validation and must still have something to train on.
    most = len(train.y) // 2
    if not 1 <= settings.num_clients <= most:
        raise ConfigurationError(
            f"the digits demo has {len(train.y)} training samples, enough for 1 to {most} "
            f"clients; got {settings.num_clients}: use fewer clients"
        )


def client_data(partition_id: int, num_partitions: int, seed: int) -> tuple[Split, Split]:
    """This client's (train, validation) share of the digits training split."""
    train, _ = load_digits_split(seed=seed)
    indices = iid_partition(len(train.y), num_partitions, seed)[partition_id]
    num_validation = int(len(indices) * VALIDATION_FRACTION)
    fit_part, validation_part = indices[num_validation:], indices[:num_validation]
    return (
        Split(train.x[fit_part], train.y[fit_part]),
        Split(train.x[validation_part], train.y[validation_part]),
    )


class DigitsClient(Client):
    """A client holding one partition of the digits; trains softmax regression with local SGD."""

    def __init__(self, partition_id: int, num_partitions: int, seed: int = 0) -> None:
        self.partition_id = partition_id
        self.seed = seed
        self.train, self.validation = client_data(partition_id, num_partitions, seed)

    def get_parameters(self, config: Config) -> Parameters:
        return softmax.init_parameters(NUM_FEATURES, NUM_CLASSES)

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        if config.get("return_gradients"):  # FedSGD asks for the full-batch gradient instead
            gradient = softmax.gradients(parameters, self.train.x, self.train.y)
            loss, accuracy = softmax.loss_and_accuracy(parameters, self.train.x, self.train.y)
            return gradient, len(self.train.y), {"train_loss": loss, "train_accuracy": accuracy}
        # One stream per (seed, round, client): reproducible, and independent across clients.
        rng = np.random.default_rng(
            [self.seed, int(config.get("server_round", 0)), self.partition_id]
        )
        updated = softmax.train_sgd(
            parameters,
            self.train.x,
            self.train.y,
            epochs=int(config.get("local_epochs", 1)),
            batch_size=int(config.get("batch_size", 16)),
            learning_rate=float(config.get("lr", 0.5)),
            rng=rng,
            proximal_mu=float(config.get("proximal_mu", 0.0)),
        )
        loss, accuracy = softmax.loss_and_accuracy(updated, self.train.x, self.train.y)
        return updated, len(self.train.y), {"train_loss": loss, "train_accuracy": accuracy}

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        loss, accuracy = softmax.loss_and_accuracy(parameters, self.validation.x, self.validation.y)
        return loss, len(self.validation.y), {"accuracy": accuracy}


@dataclass(frozen=True)
class DigitsClientFn:
    """A `client_fn` building the demo client for a context's partition (picklable)."""

    seed: int = 0

    def __call__(self, context: Context) -> DigitsClient:
        return DigitsClient(context.partition_id, context.num_partitions, self.seed)


def make_client_fn(seed: int = 0) -> DigitsClientFn:
    """A `client_fn` building the demo client for a context's partition."""
    return DigitsClientFn(seed)


def centralized_evaluate_fn(seed: int = 0):
    """Evaluate the global model on the held-out digits test split, on the server."""

    def evaluate(server_round: int, parameters: Parameters, config: Config):
        _, test = load_digits_split(seed=seed)
        loss, accuracy = softmax.loss_and_accuracy(parameters, test.x, test.y)
        return loss, {"accuracy": accuracy}

    return evaluate


def make_strategy(settings: DemoSettings) -> FedAvg:
    """FedAvg over the demo's clients, with centralized evaluation and weighted metrics."""

    def fit_config(server_round: int) -> Config:
        return {
            "server_round": server_round,
            "local_epochs": settings.local_epochs,
            "batch_size": settings.batch_size,
            "lr": settings.learning_rate,
        }

    minimum = min(2, settings.num_clients)
    return FedAvg(
        fraction_fit=settings.fraction_fit,
        fraction_evaluate=settings.fraction_evaluate,
        min_fit_clients=minimum,
        min_evaluate_clients=minimum if settings.fraction_evaluate > 0 else 0,
        min_available_clients=minimum,
        initial_parameters=softmax.init_parameters(NUM_FEATURES, NUM_CLASSES),
        evaluate_fn=centralized_evaluate_fn(settings.seed),
        on_fit_config_fn=fit_config,
        on_evaluate_config_fn=lambda server_round: {"server_round": server_round},
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
