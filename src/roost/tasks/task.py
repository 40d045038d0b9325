"""`roost.Task`: a PyTorch task's settings plus the conveniences that need torch.

The class imports no ML framework, so `roost.Task` is available without torch installed; torch is
imported only when a task builds its model or its clients. It sits above the training code and the
PyTorch client, which read only the settings (`roost.client.recipe.TaskSpec`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roost.client.recipe import TaskSpec
from roost.core.types import Parameters

if TYPE_CHECKING:
    from roost.client.client import Context
    from roost.client.torch import TorchClient


class Task(TaskSpec):
    """A federated training task in PyTorch: what every client trains, and on what.

    A task is also a `client_fn`: `task(context)` builds the ordinary client for that partition
    (`roost.client.torch.TorchClient`), so every engine can run it; the vectorized engine
    recognises a task and trains the whole cohort as one batched computation instead.

    Args:
        model: a zero-argument factory returning a fresh `torch.nn.Module` (a class works), built
            under `seed`; or a module instance, copied as it is. For the process engine it must be
            picklable (a module-level function or class, or an instance).
        data: `(partition_id, num_partitions) -> (x, y)`, a client's training examples.
        optimizer: the local optimizer recipe, `SGD(...)` or `Adam(...)`; a fresh optimizer state
            is created for every round, as a client that builds its optimizer in `fit` would.
        loss: `(outputs, targets) -> per-example losses`; a batch's loss is their mean.
        epochs: local epochs per round.
        batch_size: local mini-batch size; each client's last batch of an epoch may be smaller.
        proximal_mu: FedProx's μ: adds (μ/2)·‖w − w_global‖² to every local loss (0 disables it).
        eval_data: like `data`, for distributed evaluation; None evaluates on the training data.
        metrics: name → `(outputs, targets) -> per-example values`, averaged over examples and
            reported by `evaluate` (and by `fit` as `train_<name>` when `fit_metrics` is True).
        fit_metrics: after local training, also report `train_loss` and `train_<metric>` of the
            new local model on the client's training data (one extra forward pass).
        seed: seeds the initial model and each client's batch order. The batch order of a round
            is a function of (seed, server_round, partition_id) only, the same on every engine.
        dtype: "float32" or "float64"; the model is cast to it and inputs are converted to it.
        steps_per_epoch: train on only the first this many batches of each epoch's order (as
            Keras' `fit(steps_per_epoch=...)` does); None: every batch.

    A round's FitIns config may override the recipe with the keys `lr`, `local_epochs`,
    `batch_size`, `steps_per_epoch` and `proximal_mu`; `server_round` selects the round's batch
    order. Use `task.fit_config` as the strategy's `on_fit_config_fn` to send the round number.
    """

    def initial_parameters(self) -> Parameters:
        """The model built under `seed`, as a list of NumPy arrays (its `state_dict` order)."""
        from roost.client.training import initial_parameters

        return initial_parameters(self)

    def evaluate_fn(self, x: Any, y: Any, batch_size: int = 1024) -> Callable:
        """A centralized `evaluate_fn` for the strategy: loss and metrics of the global model on
        `(x, y)`, computed on the server."""
        from roost.client.evaluation import make_evaluate_fn

        return make_evaluate_fn(self, x, y, batch_size)

    def client(self, partition_id: int, num_partitions: int) -> TorchClient:
        """The ordinary per-client form of this task (used by every engine but `vectorized`)."""
        from roost.client.torch import TorchClient

        return TorchClient.from_task(self, partition_id, num_partitions)

    def __call__(self, context: Context) -> TorchClient:
        """A task is a `client_fn`: it builds the client for `context.partition_id`."""
        return self.client(context.partition_id, context.num_partitions)
