"""Keras adapter: a compiled Keras model and local data as a federated client.

Works with Keras 3 on any backend (TensorFlow, PyTorch, JAX), which includes TensorFlow's
`tf.keras`. Parameters are `model.get_weights()`, a list of NumPy arrays, in the model's order.

    model = keras.Sequential([...])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    client = KerasClient(model, x_train, y_train, x_val, y_val, epochs=1, batch_size=32)

The round config may override the local schedule with `"local_epochs"` (or `"epochs"`),
`"batch_size"` and `"steps_per_epoch"`. Keras itself is never imported by this module: the model
you pass brings its own.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from roost.client.client import Client
from roost.core.config_keys import BATCH_SIZE, EPOCHS, LOCAL_EPOCHS, STEPS_PER_EPOCH
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError


def _scalar_metrics(values: dict[str, Any], prefix: str = "") -> Metrics:
    metrics: Metrics = {}
    for name, value in values.items():
        value = np.asarray(value)
        if value.ndim == 0 and isinstance(value.item(), numbers.Real):
            metrics[prefix + name] = float(value.item())
    return metrics


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
        self.epochs = epochs
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.shuffle = shuffle
        self.verbose = verbose

    def get_parameters(self, config: Config) -> Parameters:
        return [np.asarray(weight) for weight in self.model.get_weights()]

    def set_parameters(self, parameters: Parameters) -> None:
        self.model.set_weights(list(parameters))

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        self.set_parameters(parameters)
        epochs = int(config.get(LOCAL_EPOCHS, config.get(EPOCHS, self.epochs)))
        batch_size = int(config.get(BATCH_SIZE, self.batch_size))
        steps = config.get(STEPS_PER_EPOCH, self.steps_per_epoch)
        history = self.model.fit(
            self.x_train,
            self.y_train,
            epochs=epochs,
            batch_size=batch_size,
            steps_per_epoch=None if steps is None else int(steps),
            shuffle=self.shuffle,
            verbose=self.verbose,
        )
        last = {name: values[-1] for name, values in history.history.items() if len(values)}
        updated = [
            np.asarray(new).astype(old.dtype, copy=False)
            for new, old in zip(self.model.get_weights(), parameters, strict=True)
        ]
        return updated, len(self.y_train), _scalar_metrics(last, "train_")

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        self.set_parameters(parameters)
        results = self.model.evaluate(
            self.x_val,
            self.y_val,
            batch_size=int(config.get(BATCH_SIZE, self.batch_size)),
            verbose=self.verbose,
            return_dict=True,
        )
        metrics = _scalar_metrics(results)
        loss = metrics.pop("loss")
        return loss, len(self.y_val), metrics
