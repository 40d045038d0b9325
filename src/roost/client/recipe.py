"""What a PyTorch task trains, as plain data: local optimizer recipes, losses and a task's settings.

Nothing here imports an ML framework, so the training code (`roost.client.training`), the PyTorch
client, `roost.Task` (`roost.tasks.task`, a layer above) and the vectorized engine all build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from roost.core.checks import check_number
from roost.core.config_keys import (
    BATCH_SIZE,
    LEARNING_RATE,
    LOCAL_EPOCHS,
    PROXIMAL_MU,
    SERVER_ROUND,
    STEPS_PER_EPOCH,
)
from roost.core.types import Config
from roost.errors import ConfigurationError

DataFn = Callable[[int, int], tuple[Any, Any]]
"""`(partition_id, num_partitions) -> (x, y)`: one client's examples (NumPy arrays or tensors)."""

LossFn = Callable[[Any, Any], Any]
"""`(outputs, targets) -> per-example losses` (a tensor of shape `[batch]`, not their mean)."""

MetricFn = Callable[[Any, Any], Any]
"""`(outputs, targets) -> per-example values` (shape `[batch]`); roost averages them."""


def cross_entropy(outputs: Any, targets: Any) -> Any:
    """Per-example cross-entropy of logits `outputs` against integer class `targets`."""
    import torch.nn.functional as F

    return F.cross_entropy(outputs, targets, reduction="none")


def squared_error(outputs: Any, targets: Any) -> Any:
    """Per-example squared error summed over output dimensions (for regression tasks)."""
    difference = (outputs - targets.reshape(outputs.shape)).reshape(outputs.shape[0], -1)
    return (difference * difference).sum(dim=1)


def accuracy(outputs: Any, targets: Any) -> Any:
    """Per-example 1.0/0.0: is the arg-max of the logits the target class?"""
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype)


def _check_steps(steps: int | None, name: str) -> None:
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ConfigurationError(f"{name} must be an int >= 1 or None, got {steps!r}")


@dataclass(frozen=True)
class SGD:
    """Local SGD, with PyTorch's `torch.optim.SGD` semantics.

    Weight decay adds `weight_decay * w` to the gradient; momentum keeps `buf = momentum * buf + g`
    (the first step sets `buf = g`) and steps by `buf` (or `g + momentum * buf` with `nesterov`).
    """

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        check_number("SGD lr", self.lr)
        check_number("SGD momentum", self.momentum, allow_zero=True)
        check_number("SGD weight_decay", self.weight_decay, allow_zero=True)
        if self.nesterov and self.momentum == 0:
            raise ConfigurationError("SGD nesterov=True needs momentum > 0")


@dataclass(frozen=True)
class Adam:
    """Local Adam, with `torch.optim.Adam` semantics (L2 weight decay, bias correction).

    `eps_before_bias_correction=True` gives Keras' Adam instead: `eps` is added to √v before the
    bias correction, `w -= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + eps)`, where torch divides √v by
    √(1−β₂ᵗ) first and adds `eps` after.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    eps_before_bias_correction: bool = False

    def __post_init__(self) -> None:
        check_number("Adam lr", self.lr)
        check_number("Adam eps", self.eps)
        check_number("Adam weight_decay", self.weight_decay, allow_zero=True)
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ConfigurationError(f"Adam betas must be two numbers in [0, 1), got {self.betas}")


LocalOptimizer = SGD | Adam


@dataclass(frozen=True)
class Recipe:
    """The local training settings of one round, after applying the round's config overrides."""

    optimizer: LocalOptimizer
    epochs: int
    batch_size: int
    proximal_mu: float
    steps_per_epoch: int | None = None

    def key(self) -> tuple:
        """Clients with equal keys can be trained together in one batched computation."""
        return (
            self.optimizer,
            self.epochs,
            self.batch_size,
            self.proximal_mu,
            self.steps_per_epoch,
        )


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """The settings of a `roost.Task` (documented there), as plain data.

    `roost.Task` adds what needs torch (the initial model, the client it builds); the training
    code and `TorchClient` read only these settings.
    """

    model: Callable[[], Any]
    data: DataFn
    optimizer: LocalOptimizer = field(default_factory=SGD)
    loss: LossFn = cross_entropy
    epochs: int = 1
    batch_size: int = 32
    proximal_mu: float = 0.0
    eval_data: DataFn | None = None
    metrics: Mapping[str, MetricFn] = field(default_factory=lambda: {"accuracy": accuracy})
    fit_metrics: bool = False
    seed: int = 0
    dtype: str = "float32"
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise ConfigurationError(
                "Task.model must be an nn.Module or a zero-argument factory returning one "
                "(e.g. a module-level function or the module's class), got "
                f"{type(self.model).__name__}"
            )
        if not callable(self.data):
            raise ConfigurationError("Task.data must be a function (partition_id, num_partitions)")
        if not isinstance(self.optimizer, SGD | Adam):
            raise ConfigurationError(
                f"Task.optimizer must be roost.SGD(...) or roost.Adam(...), got {self.optimizer!r}"
            )
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigurationError(f"Task.epochs must be an int >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigurationError(
                f"Task.batch_size must be an int >= 1, got {self.batch_size!r}"
            )
        check_number("Task.proximal_mu", self.proximal_mu, allow_zero=True)
        _check_steps(self.steps_per_epoch, "Task.steps_per_epoch")
        if self.dtype not in ("float32", "float64"):
            raise ConfigurationError(
                f"Task.dtype must be 'float32' or 'float64', got {self.dtype!r}"
            )

    def recipe(self, config: Config | None = None) -> Recipe:
        """The round's recipe: the task's settings with `config` overrides applied."""
        config = config or {}
        optimizer = self.optimizer
        if LEARNING_RATE in config:
            lr = float(config[LEARNING_RATE])
            check_number("config 'lr'", lr)
            optimizer = replace(optimizer, lr=lr)
        epochs = int(config.get(LOCAL_EPOCHS, self.epochs))
        batch_size = int(config.get(BATCH_SIZE, self.batch_size))
        if epochs < 1 or batch_size < 1:
            raise ConfigurationError(
                f"config local_epochs and batch_size must be >= 1, got {epochs} and {batch_size}"
            )
        mu = float(config.get(PROXIMAL_MU, self.proximal_mu))
        check_number("config 'proximal_mu'", mu, allow_zero=True)
        steps = config.get(STEPS_PER_EPOCH, self.steps_per_epoch)
        steps = None if steps is None else int(steps)
        _check_steps(steps, "config 'steps_per_epoch'")
        return Recipe(optimizer, epochs, batch_size, mu, steps)

    def fit_config(self, server_round: int) -> Config:
        """An `on_fit_config_fn` that sends the round number (which selects the batch order)."""
        return {SERVER_ROUND: server_round}
