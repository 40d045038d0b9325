"""The PyTorch client adapter: an `nn.Module`, a loss, a local optimizer recipe and a client's data.

    client = TorchClient(Net(), (x_train, y_train), optimizer=roost.SGD(lr=0.1, momentum=0.9),
                         epochs=1, batch_size=32, eval_data=(x_val, y_val))

It is the per-client form of a `roost.Task` (`task(context)` builds one), and it trains and scores
with the task's one code path (`roost.client.training`, `roost.client.evaluation`), so a task gives
the same model whichever engine runs it. Requires torch (imported when this module is).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import torch

from roost.client.client import Client
from roost.client.dp_sgd import DPSGD, fit_dp_sgd
from roost.client.evaluation import evaluate_model, fit_client
from roost.client.recipe import (
    LocalOptimizer,
    LossFn,
    MetricFn,
    TaskSpec,
    accuracy,
    cross_entropy,
)
from roost.client.training import TaskModel
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError

_local = threading.local()


def task_model_for(task: TaskSpec) -> TaskModel:
    """This thread's functional model of `task`, built once and reused by the task's clients.

    Per thread, because a functional call swaps tensors into the shared module while it runs.
    """
    cache = getattr(_local, "task_models", None)
    if cache is None:
        cache = _local.task_models = weakref.WeakKeyDictionary()
    model = cache.get(task)
    if model is None:
        model = cache[task] = TaskModel(task)
    return model


def _no_data(partition_id: int, num_partitions: int) -> tuple[Any, Any]:
    raise RuntimeError("a TorchClient holds its data itself")


class TorchClient(Client):
    """A client that trains a PyTorch model on its own data.

    Args:
        model: the `nn.Module` (copied; used as the initial model) or a factory returning one.
        train_data: `(x, y)` training examples (NumPy arrays or tensors).
        optimizer: `roost.SGD(...)` (default `SGD(lr=0.01)`) or `roost.Adam(...)`; fresh each round.
        loss: `(outputs, targets) -> per-example losses` (default: cross-entropy on logits).
        epochs, batch_size: local epochs and mini-batch size.
        proximal_mu: FedProx's μ; adds (μ/2)·‖w − w_global‖² to the local loss.
        eval_data: `(x, y)` for `evaluate`; None evaluates on the training data.
        metrics: name → per-example metric function (default: accuracy).
        fit_metrics: also report `train_loss` / `train_<metric>` after local training.
        seed: with the round number and `partition_id`, fixes the batch order.
        partition_id: this client's partition (selects its batch order).
        dtype: "float32" or "float64".
        dp_sgd: `DPSGD(...)` trains with record-level DP-SGD (Opacus) and reports the client's
            ε so far as the fit metric `record_epsilon` (see `roost.client.dp_sgd`).
        state: where the DP-SGD accountant is kept across rounds: pass `context.state`, so ε
            accumulates over every round the client trains in (default: this object's own dict).

    The fit config may override `lr`, `local_epochs`, `batch_size` and `proximal_mu` for a round;
    `server_round` in it selects the round's batch order.
    """

    def __init__(
        self,
        model: Any,
        train_data: tuple[Any, Any],
        *,
        optimizer: LocalOptimizer | None = None,
        loss: LossFn = cross_entropy,
        epochs: int = 1,
        batch_size: int = 32,
        proximal_mu: float = 0.0,
        eval_data: tuple[Any, Any] | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
        fit_metrics: bool = False,
        seed: int = 0,
        partition_id: int = 0,
        dtype: str = "float32",
        dp_sgd: DPSGD | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        task = TaskSpec(
            model=model,
            data=_no_data,
            **({"optimizer": optimizer} if optimizer is not None else {}),
            loss=loss,
            epochs=epochs,
            batch_size=batch_size,
            proximal_mu=proximal_mu,
            metrics=dict(metrics) if metrics is not None else {"accuracy": accuracy},
            fit_metrics=fit_metrics,
            seed=seed,
            dtype=dtype,
        )
        self._setup(TaskModel(task), train_data, eval_data, partition_id)
        if dp_sgd is not None and not isinstance(dp_sgd, DPSGD):
            raise ConfigurationError(
                f"dp_sgd must be a DPSGD (roost.client.dp_sgd), got {type(dp_sgd).__name__}"
            )
        self.dp_sgd = dp_sgd
        self.state = {} if state is None else state

    @classmethod
    def from_task(cls, task: TaskSpec, partition_id: int, num_partitions: int) -> TorchClient:
        """The client of `task` for one partition (what `task(context)` returns)."""
        client = cls.__new__(cls)
        eval_data = task.eval_data(partition_id, num_partitions) if task.eval_data else None
        client._setup(
            task_model_for(task), task.data(partition_id, num_partitions), eval_data, partition_id
        )
        client.dp_sgd, client.state = None, {}
        return client

    def _setup(
        self,
        task_model: TaskModel,
        train_data: tuple[Any, Any],
        eval_data: tuple[Any, Any] | None,
        partition_id: int,
    ) -> None:
        self.task_model = task_model
        self.task = task_model.task
        self.partition_id = partition_id
        self.x, self.y = task_model.data_tensors(*train_data)
        if eval_data is None:
            self.x_eval, self.y_eval = self.x, self.y
        else:
            self.x_eval, self.y_eval = task_model.data_tensors(*eval_data)

    def get_parameters(self, config: Config) -> Parameters:
        """The task's initial model (built under its seed)."""
        return self.task_model.to_arrays(self.task_model.initial_state(), None)

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        """Train from `parameters` on this client's data with the round's recipe (with DP-SGD
        when the client has `dp_sgd`)."""
        if self.dp_sgd is not None:
            return fit_dp_sgd(
                self.task_model, parameters, self.x, self.y, config, self.dp_sgd, self.state
            )
        return fit_client(self.task_model, parameters, self.x, self.y, config, self.partition_id)

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        """Loss and metrics of `parameters` on this client's evaluation data."""
        with torch.no_grad():
            state = self.task_model.from_arrays(parameters)
        loss, metrics = evaluate_model(self.task_model, state, self.x_eval, self.y_eval)
        return loss, len(self.y_eval), metrics
