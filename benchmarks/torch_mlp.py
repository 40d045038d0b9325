"""A 64-32-10 MLP on the digits with roost's PyTorch client: the torch rows of
`benchmarks/distributed_dp.py` (the same partitions and test split as the softmax demo)."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from roost.apps.digits.client import client_data
from roost.apps.digits.strategy import strategy_knobs
from roost.client.recipe import SGD, TaskSpec
from roost.client.torch import TorchClient
from roost.data.bundled_digits import load_digits_split
from roost.settings import RunSettings
from roost.strategy import FedAvg, Strategy

HIDDEN = 32
torch.set_num_threads(1)  # tiny batches: threads cost more than they save


def make_mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
    )


class DigitsData:
    """A partition's (x, y) of the demo's training share, as the torch task reads it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        train, _ = client_data(partition_id, num_partitions, self.seed)
        return train.x.astype(np.float32), train.y.astype(np.int64)


class MLPClientFn:
    """Clients of one torch task: the functional model is built once, not per client."""

    def __init__(self, seed: int, lr: float, epochs: int) -> None:
        self.task = TaskSpec(
            model=lambda: make_mlp(seed),
            data=DigitsData(seed),
            optimizer=SGD(lr=lr),
            epochs=epochs,
            batch_size=16,
            seed=seed,
        )

    def __call__(self, context) -> TorchClient:
        return TorchClient.from_task(self.task, context.partition_id, context.num_partitions)


def mlp_client_fn(seed: int, args: argparse.Namespace) -> MLPClientFn:
    return MLPClientFn(seed, args.lr, args.local_epochs)


def _accuracy(parameters, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in parameters)
    logits = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    return loss, float((logits.argmax(axis=1) == y).mean())


def mlp_strategy(settings: RunSettings, seed: int) -> Strategy:
    _, test = load_digits_split(seed=seed)

    def evaluate(server_round, parameters, config):
        loss, accuracy = _accuracy(parameters, test.x, test.y)
        return loss, {"accuracy": accuracy}

    initial = [p.detach().numpy().copy() for p in make_mlp(seed).parameters()]
    knobs = {**strategy_knobs(settings), "initial_parameters": initial, "evaluate_fn": evaluate}
    return FedAvg(**knobs)
