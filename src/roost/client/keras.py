"""Keras adapter: a compiled Keras model and local data as a federated client.

Works with Keras 3 on any backend (TensorFlow, PyTorch, JAX), which includes TensorFlow's
`tf.keras`. Parameters are `model.get_weights()`, a list of NumPy arrays, in the model's order.

    model = keras.Sequential([...])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    client = KerasClient(model, x_train, y_train, x_val, y_val, epochs=1, batch_size=32)

The round config may override the local schedule with `"local_epochs"` (or `"epochs"`),
`"batch_size"` and `"steps_per_epoch"`. Keras itself is never imported by this module: the model
you pass brings its own.

`roost.tasks.keras.KerasTask` builds these clients with `batch_order=(seed, partition_id)` and
`fresh_optimizer=True`, which makes them train exactly as the vectorized engine trains the task.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from roost.client.client import Client, client_rng
from roost.core.config_keys import BATCH_SIZE, EPOCHS, LOCAL_EPOCHS, SERVER_ROUND, STEPS_PER_EPOCH
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError


def _scalar_metrics(values: dict[str, Any], prefix: str = "") -> Metrics:
    metrics: Metrics = {}
    for name, value in values.items():
        value = np.asarray(value)
        if value.ndim == 0 and isinstance(value.item(), numbers.Real):
            metrics[prefix + name] = float(value.item())
    return metrics


@dataclass(frozen=True)
class LocalSchedule:
    """How long a client trains in a round: local epochs, mini-batch size and the batches kept
    per epoch (None: every batch)."""

    epochs: int = 1
    batch_size: int = 32
    steps_per_epoch: int | None = None

    def for_round(self, config: Config) -> LocalSchedule:
        """This schedule with the round config's `"local_epochs"` (or `"epochs"`),
        `"batch_size"` and `"steps_per_epoch"` in place of its own."""
        steps = config.get(STEPS_PER_EPOCH, self.steps_per_epoch)
        return LocalSchedule(
            int(config.get(LOCAL_EPOCHS, config.get(EPOCHS, self.epochs))),
            int(config.get(BATCH_SIZE, self.batch_size)),
            None if steps is None else int(steps),
        )


class KerasClient(Client):
    """A federated client around a compiled Keras model.

    Args:
        model: a compiled Keras model (`model.compile(optimizer, loss, metrics=[...])`).
        x_train, y_train: local training data.
        x_val, y_val: local evaluation data (defaults to the training data).
        epochs, batch_size, steps_per_epoch: the local schedule when the round config does not
            set `"local_epochs"`/`"epochs"`, `"batch_size"`, `"steps_per_epoch"`.
        shuffle: shuffle the local data every epoch (Keras' own shuffling).
        verbose: Keras' verbosity during local fit and evaluate.
        batch_order: `(seed, partition_id)`: instead of Keras' shuffling, each round's batch
            order is drawn from `roost.client.client.client_rng(seed, server_round, partition_id)`
            (a permutation per epoch, cut into batches, the first `steps_per_epoch` of them
            kept): the order a `roost.Task` and the vectorized engine use.
        fresh_optimizer: start every `fit` from the optimizer's state before its first step
            (zero moments, step 0), as a client built anew for each round does. Without it the
            compiled optimizer carries its state from one `fit` to the next.

    `fit` returns the new weights, the number of training examples and the last epoch's training
    metrics prefixed `train_` (`train_loss`, `train_accuracy`, …). `evaluate` returns the loss,
    the number of evaluation examples and the compiled metrics (`accuracy`, …). FedProx's
    `proximal_mu` is not applied by this adapter.
    """

    def __init__(
        self,
        model: Any,
        x_train: Any,
        y_train: Any,
        x_val: Any | None = None,
        y_val: Any | None = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        steps_per_epoch: int | None = None,
        shuffle: bool = True,
        verbose: int = 0,
        batch_order: tuple[int, int] | None = None,
        fresh_optimizer: bool = False,
    ) -> None:
        if not hasattr(model, "get_weights") or not hasattr(model, "fit"):
            raise ConfigurationError(f"KerasClient needs a Keras model, got {type(model).__name__}")
        if getattr(model, "optimizer", None) is None:
            raise ConfigurationError(
                "the Keras model is not compiled; call model.compile(optimizer, loss, "
                "metrics=[...]) before handing it to KerasClient"
            )
        self.model = model
        self.x_train, self.y_train = x_train, y_train
        self.x_val = x_train if x_val is None else x_val
        self.y_val = y_train if y_val is None else y_val
        self.schedule = LocalSchedule(epochs, batch_size, steps_per_epoch)
        self.shuffle = shuffle
        self.verbose = verbose
        self.batch_order = batch_order
        self.fresh_optimizer = fresh_optimizer
        self._optimizer_start: list[Any] | None = None

    def get_parameters(self, config: Config) -> Parameters:
        return [np.asarray(weight) for weight in self.model.get_weights()]

    def set_parameters(self, parameters: Parameters) -> None:
        self.model.set_weights(list(parameters))

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        self.set_parameters(parameters)
        schedule = self.schedule.for_round(config)
        if self.fresh_optimizer:
            self._reset_optimizer()
        if self.batch_order is None:
            history = self.model.fit(
                self.x_train,
                self.y_train,
                epochs=schedule.epochs,
                batch_size=schedule.batch_size,
                steps_per_epoch=schedule.steps_per_epoch,
                shuffle=self.shuffle,
                verbose=self.verbose,
            ).history
        else:
            history = self._fit_in_order(int(config.get(SERVER_ROUND, 0)), schedule)
        last = {name: values[-1] for name, values in history.items() if len(values)}
        updated = [
            np.asarray(new).astype(old.dtype, copy=False)
            for new, old in zip(self.model.get_weights(), parameters, strict=True)
        ]
        return updated, len(self.y_train), _scalar_metrics(last, "train_")

    def _fit_in_order(self, server_round: int, schedule: LocalSchedule) -> dict[str, list[Any]]:
        """Train epoch by epoch on the examples in roost's batch order for this round."""
        seed, partition_id = self.batch_order  # type: ignore[misc]
        rng = client_rng(seed, server_round, partition_id)
        x, y = np.asarray(self.x_train), np.asarray(self.y_train)
        history: dict[str, list[Any]] = {}
        for _ in range(schedule.epochs):
            order = rng.permutation(len(y))
            if schedule.steps_per_epoch is not None:
                order = order[: schedule.steps_per_epoch * schedule.batch_size]
            epoch = self.model.fit(
                x[order],
                y[order],
                batch_size=schedule.batch_size,
                shuffle=False,
                verbose=self.verbose,
            )
            for name, values in epoch.history.items():
                history.setdefault(name, []).extend(values)
        return history

    def _reset_optimizer(self) -> None:
        """Put the optimizer's variables back to their values before its first step."""
        optimizer = self.model.optimizer
        if self._optimizer_start is None:
            if not optimizer.built:  # Keras builds it on the first step; its slots start at 0
                optimizer.build(self.model.trainable_variables)
            self._optimizer_start = [variable.numpy() for variable in optimizer.variables]
            return
        for variable, value in zip(optimizer.variables, self._optimizer_start, strict=True):
            variable.assign(value)

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        self.set_parameters(parameters)
        results = self.model.evaluate(
            self.x_val,
            self.y_val,
            batch_size=int(config.get(BATCH_SIZE, self.schedule.batch_size)),
            verbose=self.verbose,
            return_dict=True,
        )
        metrics = _scalar_metrics(results)
        loss = metrics.pop("loss")
        return loss, len(self.y_val), metrics
