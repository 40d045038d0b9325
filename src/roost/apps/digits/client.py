"""The demo's clients: each holds one IID partition of the digits and trains softmax regression."""

from __future__ import annotations

from dataclasses import dataclass

from roost.apps.digits import softmax
from roost.apps.digits.settings import NUM_CLASSES, NUM_FEATURES, VALIDATION_FRACTION
from roost.client.client import Client, Context, client_rng
from roost.core.config_keys import (
    BATCH_SIZE,
    LEARNING_RATE,
    LOCAL_EPOCHS,
    PROXIMAL_MU,
    RETURN_GRADIENTS,
    SERVER_ROUND,
)
from roost.core.types import Config, Metrics, Parameters
from roost.data.bundled_digits import Split, load_digits_split
from roost.data.partition import iid_partition


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
        if config.get(RETURN_GRADIENTS):  # FedSGD asks for the full-batch gradient instead
            gradient = softmax.gradients(parameters, self.train.x, self.train.y)
            loss, accuracy = softmax.loss_and_accuracy(parameters, self.train.x, self.train.y)
            return gradient, len(self.train.y), {"train_loss": loss, "train_accuracy": accuracy}
        updated = softmax.train_sgd(
            parameters,
            self.train.x,
            self.train.y,
            epochs=int(config.get(LOCAL_EPOCHS, 1)),
            batch_size=int(config.get(BATCH_SIZE, 16)),
            learning_rate=float(config.get(LEARNING_RATE, 0.5)),
            rng=client_rng(self.seed, int(config.get(SERVER_ROUND, 0)), self.partition_id),
            proximal_mu=float(config.get(PROXIMAL_MU, 0.0)),
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
