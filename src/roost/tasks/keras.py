"""`KerasTask`: a compiled Keras 3 model as a `roost.Task`, so the vectorized engine trains it.

    def load_model():
        model = keras.Sequential([...])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    task = KerasTask(model=load_model, data=train_data, eval_data=val_data, batch_size=32)
    roost.run_simulation(task, 100, strategy=..., engine="vectorized")

On the vectorized engine the cohort's models are stacked and every local step runs for all of
them at once: Keras' stateless call (`model.stateless_call`, on the torch backend) gives each
client's forward pass, `torch.func.vmap` batches it over the cohort, and the update is the
compiled optimizer's (SGD with or without momentum, or Adam, in Keras' arithmetic). On every other
engine the task builds the ordinary Keras adapter (`roost.client.keras.KerasClient`) with the same
batch order and a fresh optimizer state every round, so both give the same model.

The vectorized engine needs Keras' torch backend (`KERAS_BACKEND=torch` before Keras is
imported); the adapter runs on every backend. Models the vectorized engine cannot train exactly
(random layers such as Dropout, BatchNormalization's moving statistics or other non-trainable
variables, regularization losses, optimizers other than SGD and Adam or with clipping, weight
decay, EMA or schedules) are refused with a line that names another engine.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roost.client.keras import KerasClient
from roost.client.recipe import SGD, Adam, LocalOptimizer, LossFn
from roost.errors import ConfigurationError, other_engines
from roost.tasks.task import Task

_ACCURACY = ("accuracy", "acc")
_OTHER_ENGINES = f"use {other_engines('sequential', 'process', 'ray')}: the Keras adapter"


def _keras() -> Any:
    try:
        return importlib.import_module("keras")
    except ImportError as error:
        raise ConfigurationError("KerasTask needs Keras 3: pip install keras") from error


def build_compiled(factory: Callable[[], Any]) -> Any:
    """`factory()`, checked to be a built, compiled Keras model."""
    model = factory()
    if not hasattr(model, "stateless_call") or not hasattr(model, "get_weights"):
        raise ConfigurationError(
            f"KerasTask.model must return a Keras 3 model, got {type(model).__name__}"
        )
    if getattr(model, "optimizer", None) is None:
        raise ConfigurationError(
            "KerasTask.model must return a compiled model: call model.compile(optimizer, loss, "
            "metrics=[...]) in it"
        )
    if not model.built:
        raise ConfigurationError(
            "KerasTask.model must return a built model: start it with keras.Input(shape=...)"
        )
    return model


def keras_optimizer_recipe(optimizer: Any) -> LocalOptimizer:
    """The roost recipe of a Keras SGD or Adam optimizer, with Keras' arithmetic."""
    config = optimizer.get_config()
    unsupported = [
        name
        for name in (
            "weight_decay",
            "clipnorm",
            "global_clipnorm",
            "clipvalue",
            "use_ema",
            "loss_scale_factor",
            "gradient_accumulation_steps",
            "amsgrad",
        )
        if config.get(name)
    ]
    rate = config.get("learning_rate")
    if not isinstance(rate, float):
        unsupported.append("a learning-rate schedule")
    kind = type(optimizer).__name__
    if kind not in ("SGD", "Adam") or unsupported:
        reason = f"{kind} optimizer" if kind not in ("SGD", "Adam") else ", ".join(unsupported)
        raise ConfigurationError(
            f"the vectorized engine trains Keras models compiled with SGD or Adam (a constant "
            f"learning rate, no clipping, weight decay or EMA); this one has {reason}: "
            f"{_OTHER_ENGINES}"
        )
    if kind == "SGD":
        momentum = float(config.get("momentum", 0.0))
        return SGD(
            lr=rate, momentum=momentum, nesterov=bool(config.get("nesterov")) and momentum > 0
        )
    return Adam(
        lr=rate,
        betas=(float(config["beta_1"]), float(config["beta_2"])),
        eps=float(config["epsilon"]),
        eps_before_bias_correction=True,
    )


class KerasLoss:
    """The compiled Keras loss, per example: `(outputs, targets) -> [batch]` (picklable)."""

    def __init__(self, spec: Any) -> None:
        if isinstance(spec, list | tuple | dict) and not (
            isinstance(spec, dict) and "class_name" in spec
        ):
            raise ConfigurationError(
                f"the vectorized engine trains Keras models with one loss; got {spec!r}: "
                f"{_OTHER_ENGINES}"
            )
        self.spec = spec
        self._function: Callable | None = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "_function": None}

    def __call__(self, outputs: Any, targets: Any) -> Any:
        if self._function is None:
            keras = _keras()
            resolved = keras.losses.get(self.spec)
            self._function = resolved.call if isinstance(resolved, keras.losses.Loss) else resolved
        losses = self._function(targets, outputs)
        # Keras' "sum over batch size" averages every element a sample's loss has.
        return losses.reshape(losses.shape[0], -1).mean(dim=1)


class KerasMetric:
    """A compiled Keras metric, per example (picklable): accuracy in the variant Keras picks for
    the shapes (binary, sparse or categorical), or one of Keras' metric functions by name
    (`keras.metrics.mae`, `keras.metrics.sparse_categorical_accuracy`, ...)."""

    def __init__(self, name: str) -> None:
        if name not in _ACCURACY and not inspect.isfunction(getattr(_keras().metrics, name, None)):
            raise ConfigurationError(
                f"the vectorized engine computes 'accuracy' and Keras' metric functions "
                f"(keras.metrics.<name>) per example; it cannot compute {name!r}: {_OTHER_ENGINES}"
            )
        self.name = name

    def __call__(self, outputs: Any, targets: Any) -> Any:
        if self.name in _ACCURACY:
            return _accuracy(outputs, targets)
        values = getattr(_keras().metrics, self.name)(targets, outputs)
        return values.reshape(values.shape[0], -1).mean(dim=1)


def _accuracy(outputs: Any, targets: Any) -> Any:
    """Keras' "accuracy" for these shapes, one value per example."""
    if outputs.shape[-1] == 1:  # binary
        return ((outputs[..., 0] > 0.5) == (targets.reshape(outputs.shape[0]) > 0.5)).to(
            outputs.dtype
        )
    predicted = outputs.argmax(dim=-1)
    if targets.dim() == outputs.dim() and targets.shape[-1] == outputs.shape[-1]:  # one-hot
        return (predicted == targets.argmax(dim=-1)).to(outputs.dtype)
    return (predicted == targets.reshape(predicted.shape).long()).to(outputs.dtype)


def _metrics(names: Any) -> dict[str, KerasMetric]:
    names = names or []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ConfigurationError(
            "the vectorized engine computes Keras metrics given by name (e.g. metrics=['accuracy'"
            f"]); got {names!r}: {_OTHER_ENGINES}"
        )
    return {name: KerasMetric(name) for name in names}


@dataclass(frozen=True, eq=False)
class KerasTask(Task):
    """A federated training task in Keras 3: what every client trains, and on what.

    Args:
        model: a zero-argument function returning a built, compiled Keras model (its optimizer,
            loss and metrics are the task's). Called for every client the adapter builds, and
            once here to read the compiled settings.
        data: `(partition_id, num_partitions) -> (x, y)`, a client's training examples.
        eval_data: like `data`, for distributed evaluation; None evaluates on the training data.
        epochs, batch_size, steps_per_epoch: the local schedule (the round config may override
            `local_epochs`, `batch_size` and `steps_per_epoch`).
        seed: each client's batch order in a round is drawn from `(seed, server_round,
            partition_id)`, the same on every engine. Initial weights are Keras' own draw
            (seed it with `keras.utils.set_random_seed`); give the strategy
            `task.initial_parameters()` once.

    On the vectorized engine `fit` reports no `train_` metrics; the adapter reports Keras'
    running averages. A fresh optimizer state is used every round on every engine.
    """

    optimizer: LocalOptimizer = field(init=False, default=None)  # type: ignore[assignment]
    loss: LossFn = field(init=False, default=None)  # type: ignore[assignment]
    metrics: Mapping[str, Any] = field(init=False, default=None)  # type: ignore[assignment]
    proximal_mu: float = field(init=False, default=0.0)
    fit_metrics: bool = field(init=False, default=False)
    dtype: str = field(init=False, default="float32")
    keras_model: Callable[[], Any] = field(init=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise ConfigurationError(
                "KerasTask.model must be a function returning a compiled Keras model"
            )
        probe = build_compiled(self.model)
        compiled = _compile_settings(probe)
        settings = {
            "keras_model": self.model,
            "model": KerasModuleFactory(self.model),
            "optimizer": keras_optimizer_recipe(probe.optimizer),
            "loss": KerasLoss(compiled.get("loss")),
            "metrics": _metrics(compiled.get("metrics")),
            "dtype": _dtype_name(probe),
        }
        if compiled.get("loss_weights") is not None or compiled.get("weighted_metrics"):
            raise ConfigurationError(
                f"the vectorized engine does not apply loss_weights or weighted_metrics: "
                f"{_OTHER_ENGINES}"
            )
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        super().__post_init__()

    def initial_parameters(self) -> list[np.ndarray]:
        """A freshly built model's weights (`get_weights()` order), as Keras draws them."""
        return [np.asarray(weight) for weight in self.keras_model().get_weights()]

    def client(self, partition_id: int, num_partitions: int) -> KerasClient:  # type: ignore[override]
        """The Keras adapter for this partition, training as the vectorized engine does."""
        x, y = self.data(partition_id, num_partitions)
        x_val, y_val = (None, None)
        if self.eval_data is not None:
            x_val, y_val = self.eval_data(partition_id, num_partitions)
        return KerasClient(
            self.keras_model(),
            x,
            y,
            x_val,
            y_val,
            epochs=self.epochs,
            batch_size=self.batch_size,
            steps_per_epoch=self.steps_per_epoch,
            batch_order=(self.seed, partition_id),
            fresh_optimizer=True,
        )


def _compile_settings(model: Any) -> dict[str, Any]:
    """The arguments `model.compile` was called with.

    Keras keeps them as given in `_compile_config`; the public `get_compile_config()` serializes
    them first, which imports TensorFlow when it is installed (seconds) even on other backends.
    """
    kept = getattr(getattr(model, "_compile_config", None), "config", None)
    return dict(kept) if isinstance(kept, dict) else model.get_compile_config()


def _dtype_name(model: Any) -> str:
    names = {str(getattr(weight, "dtype", "float32")) for weight in model.weights}
    if len(names) == 1 and names <= {"float32", "float64"}:
        return names.pop()
    raise ConfigurationError(
        f"the vectorized engine trains Keras models whose weights are all float32 or all float64, "
        f"got {sorted(names)}: {_OTHER_ENGINES}"
    )


class KerasModuleFactory:
    """Builds the torch module through which the vectorized engine calls a Keras model."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory

    def __call__(self) -> Any:
        from roost.tasks.keras_module import KerasModule

        return KerasModule(build_compiled(self.factory))
