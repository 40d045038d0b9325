"""Scoring a task's models: one evaluation loop, whatever is being evaluated.

`_evaluation_means` is that loop: forward passes without gradients over chunks of examples, each
client's per-example loss and metrics summed in float64, then divided by its number of examples.
Three shapes of work feed it:

- one model on each client's data, in one pass over their examples concatenated
  (`evaluate_clients`: a client's `evaluate`, the server's `evaluate_fn`, and the vectorized
  engine's evaluate exchange);
- a cohort of models stacked along a leading axis, each on its own zero-padded examples
  (`evaluate_stacked`: the vectorized engine's `train_` metrics after a batched fit);
- a client's fit result, whose `train_` metrics are `evaluate_clients` of its new model
  (`fit_client`: `TorchClient.fit` and the vectorized engine one client at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import vmap

from roost.client.client import client_rng
from roost.client.recipe import TaskSpec
from roost.client.training import TaskModel, TensorDict, round_of, train_client
from roost.core.types import Config, Metrics, Parameters

# Evaluation forward passes take this many examples at a time (no gradients are kept).
EVAL_BATCH_SIZE = 1024

Scores = tuple[float, Metrics]
"""A mean loss and mean metrics."""


def _evaluation_means(
    model: TaskModel,
    chunk_sums: Callable[[int, int], torch.Tensor],
    num_examples: int,
    counts: Sequence[int],
    batch_size: int,
    prefix: str,
) -> list[Scores]:
    """The one evaluation loop.

    `chunk_sums(begin, end)` scores examples `begin:end` and returns each client's sums, shape
    [clients, 1 + metrics]; the loop adds them up over all `num_examples` and divides client c's
    by `counts[c]` (an empty client scores 0).
    """
    names = list(model.task.metrics)
    sums = torch.zeros((len(counts), 1 + len(names)), dtype=torch.float64, device=model.device)
    model.model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, num_examples, batch_size):
                sums += chunk_sums(begin, min(begin + batch_size, num_examples))
    finally:
        model.model.train()
    scores = []
    for row, count in zip(sums.tolist(), counts, strict=True):
        n = max(count, 1)
        metrics = {f"{prefix}{name}": value / n for name, value in zip(names, row[1:], strict=True)}
        scores.append((row[0] / n, metrics))
    return scores


def evaluate_clients(
    model: TaskModel,
    state: tuple[TensorDict, TensorDict],
    datasets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    prefix: str = "",
    batch_size: int = EVAL_BATCH_SIZE,
) -> list[Scores]:
    """Mean loss and metrics of one model (`state`) on each client's `(x, y)`, in one pass."""
    params, buffers = state
    if len(datasets) == 1:
        x_all, y_all = datasets[0]  # nothing to concatenate: no copy of the data
    else:
        x_all = torch.cat([x for x, _ in datasets])
        y_all = torch.cat([y for _, y in datasets])
    counts = [len(y) for _, y in datasets]
    owner = torch.repeat_interleave(
        torch.arange(len(datasets), device=model.device),
        torch.as_tensor(counts, device=model.device),
    )

    def chunk_sums(begin: int, end: int) -> torch.Tensor:
        scores = model.example_scores(params, buffers, x_all[begin:end], y_all[begin:end])
        sums = torch.zeros((len(counts), scores.shape[0]), dtype=torch.float64, device=model.device)
        return sums.index_add_(0, owner[begin:end], scores.T)

    return _evaluation_means(model, chunk_sums, len(y_all), counts, batch_size, prefix)


def evaluate_model(
    model: TaskModel,
    state: tuple[TensorDict, TensorDict],
    x: torch.Tensor,
    y: torch.Tensor,
    prefix: str = "",
) -> Scores:
    """Mean loss and metrics of one model on one client's `(x, y)`."""
    return evaluate_clients(model, state, [(x, y)], prefix)[0]


def evaluate_stacked(
    model: TaskModel,
    stacked: TensorDict,
    buffers: TensorDict,
    x_stack: torch.Tensor,
    y_stack: torch.Tensor,
    counts: Sequence[int],
    prefix: str = "",
) -> list[Scores]:
    """Mean loss and metrics of client c's model (`stacked[name][c]`) on its first `counts[c]`
    examples of `x_stack[c]` / `y_stack[c]`, for the whole cohort in one `vmap`."""
    scores = vmap(model.example_scores, in_dims=(0, None, 0, 0))
    lengths = torch.as_tensor(counts, device=model.device).unsqueeze(1)

    def chunk_sums(begin: int, end: int) -> torch.Tensor:
        values = scores(stacked, buffers, x_stack[:, begin:end], y_stack[:, begin:end])
        real = torch.arange(begin, end, device=model.device) < lengths  # not padding
        return (values * real.unsqueeze(1)).sum(dim=2)

    # The cohort shares each chunk, so a chunk holds fewer examples per client.
    batch_size = max(1, EVAL_BATCH_SIZE // max(len(counts), 1))
    return _evaluation_means(model, chunk_sums, x_stack.shape[1], counts, batch_size, prefix)


def fit_client(
    model: TaskModel,
    arrays: Parameters,
    x: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    partition_id: int,
) -> tuple[Parameters, int, Metrics]:
    """One client's fit, as a client returns it: trained arrays (in the dtypes received), its
    number of examples, and `train_loss` / `train_<metric>` when the task asks for them."""
    task = model.task
    rng = client_rng(task.seed, round_of(config), partition_id)
    state = train_client(model, arrays, x, y, task.recipe(config), rng)
    metrics: Metrics = {}
    if task.fit_metrics:
        loss, named = evaluate_model(model, state, x, y, prefix="train_")
        metrics = {"train_loss": loss, **named}
    return model.to_arrays(state, arrays), len(y), metrics


def make_evaluate_fn(
    task: TaskSpec, x: Any, y: Any, batch_size: int = EVAL_BATCH_SIZE
) -> Callable[[int, Parameters, Config], Scores | None]:
    """A centralized `evaluate_fn(server_round, parameters, config) -> (loss, metrics)`; None
    when the loss is not finite."""
    model = TaskModel(task)
    data = [model.data_tensors(x, y)]

    def evaluate(server_round: int, parameters: Parameters, config: Config) -> Scores | None:
        state = model.from_arrays(parameters)
        loss, metrics = evaluate_clients(model, state, data, batch_size=batch_size)[0]
        if not math.isfinite(loss):
            return None
        return loss, metrics

    return evaluate
