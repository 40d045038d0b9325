"""The benchmark workloads: data, models and the plain client training, shared by every runner.

Imports only NumPy at module level (torch inside the functions that need it, never roost), so the
Flower runner can use it from its own virtual environment and the NumPy runner never loads torch.
Every runner (roost's engines, Flower, the plain loop) trains the same
model from the same initial parameters, on the same data, in the same batch order: the batch
order of a client in a round comes from `np.random.default_rng([seed, round, client])`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SEED = 0
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str  # "linear" or "cnn"
    num_clients: int
    cohort: int  # clients trained per round
    rounds: int
    batch_size: int = 10
    lr: float = 0.1
    epochs: int = 1
    samples_per_client: int = 50  # synthetic data only

    @property
    def fraction_fit(self) -> float:
        return self.cohort / self.num_clients


SCENARIOS = {
    "digits-100": Scenario("digits-100", "linear", num_clients=100, cohort=100, rounds=5),
    "digits-1000": Scenario("digits-1000", "linear", num_clients=1000, cohort=1000, rounds=5),
    "cnn": Scenario("cnn", "cnn", num_clients=1000, cohort=50, rounds=3),
}


# -- models ---------------------------------------------------------------------------------------


def linear_model():
    """Softmax regression on the 8×8 digits."""
    from torch import nn

    return nn.Linear(64, 10)


def cnn_model():
    """A CIFAR-shaped CNN: conv 3→32 3×3, conv 32→64 3×3, 2×2 max-pool, dense 128, dense 10."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 14 * 14, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


MODELS = {"linear": linear_model, "cnn": cnn_model}


def initial_parameters(scenario: Scenario) -> list[np.ndarray]:
    """The model built under the seed, as arrays in `state_dict` order."""
    import torch

    torch.manual_seed(SEED)
    model = MODELS[scenario.model]()
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def initial_parameters_path(scenario: Scenario) -> Path:
    return CACHE / f"initial-{scenario.model}.npz"


def save_initial_parameters(scenario: Scenario) -> None:
    """Write `initial_parameters` to the cache, for runners that must not import torch."""
    CACHE.mkdir(exist_ok=True)
    np.savez(initial_parameters_path(scenario), *initial_parameters(scenario))


def cached_initial_parameters(scenario: Scenario) -> list[np.ndarray]:
    with np.load(initial_parameters_path(scenario), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


# -- data -----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits scaled to [0, 1]: 20 % held out for the final accuracy.

    Read from the CSV scikit-learn ships, without importing scikit-learn (its import alone takes
    longer than some runs; every runner reads the data this way).
    """
    package = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    table = np.loadtxt(Path(package, "datasets", "data", "digits.csv.gz"), delimiter=",")
    x = (table[:, :-1] / 16.0).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    test, train = order[: len(y) // 5], order[len(y) // 5 :]
    return x[train], y[train], x[test], y[test]


@lru_cache(maxsize=8)
def digits_partition(num_clients: int) -> list[np.ndarray]:
    x_train = digits_split()[0]
    order = np.random.default_rng(SEED + 1).permutation(len(x_train))
    return np.array_split(order, num_clients)


@lru_cache(maxsize=1)
def class_templates() -> np.ndarray:
    return np.random.default_rng([SEED, 7]).normal(size=(10, 3, 32, 32)).astype(np.float32)


def synthetic_images(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped images: a fixed random template per class, under unit Gaussian noise."""
    y = rng.integers(0, 10, count)
    noise = rng.normal(size=(count, 3, 32, 32)).astype(np.float32)
    return class_templates()[y] + noise, y.astype(np.int64)


@dataclass(frozen=True)
class ClientData:
    """`(partition_id, num_partitions) -> (x, y)` for a scenario (picklable)."""

    model: str
    samples_per_client: int = 50

    def __call__(self, partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        if self.model == "linear":
            x, y = digits_split()[:2]
            part = digits_partition(num_partitions)[partition_id]
            return x[part], y[part]
        rng = np.random.default_rng([SEED, 1, partition_id])
        return synthetic_images(rng, self.samples_per_client)


def test_data(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    if scenario.model == "linear":
        return digits_split()[2:]
    return synthetic_images(np.random.default_rng([SEED, 2]), 1000)


# -- the plain client training (Flower's client and the compute-limit loop) -----------------------


def load(model, parameters: list[np.ndarray]) -> None:
    import torch

    names = list(model.state_dict())
    model.load_state_dict(
        {name: torch.from_numpy(np.asarray(a)) for name, a in zip(names, parameters, strict=True)}
    )


def train_plain(
    model,
    parameters: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    scenario: Scenario,
    server_round: int,
    partition_id: int,
) -> list[np.ndarray]:
    """Local SGD the usual way: nn.Module, torch.optim.SGD, loss.backward(), batch by batch."""
    import torch
    from torch import nn

    load(model, parameters)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=scenario.lr)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng([SEED, server_round, partition_id])
    for _ in range(scenario.epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), scenario.batch_size):
            batch = order[start : start + scenario.batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_t[batch]), y_t[batch]).backward()
            optimizer.step()
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def accuracy(scenario: Scenario, parameters: list[np.ndarray]) -> float:
    """Accuracy of a global model on the scenario's held-out data."""
    if scenario.model == "linear":  # plain NumPy: the same argmax, without importing torch
        weight, bias = parameters
        x, y = test_data(scenario)
        return float(((x @ weight.T + bias).argmax(1) == y).mean())
    import torch

    model = MODELS[scenario.model]()
    load(model, parameters)
    model.eval()
    x, y = test_data(scenario)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), 500):
            logits = model(torch.from_numpy(x[start : start + 500]))
            correct += int((logits.argmax(1).numpy() == y[start : start + 500]).sum())
    return correct / len(y)


def weighted_mean(results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    """FedAvg: the example-weighted mean of the clients' models."""
    total = sum(n for _, n in results)
    return [
        (sum(params[i].astype(np.float64) * n for params, n in results) / total).astype(np.float32)
        for i in range(len(results[0][0]))
    ]


def sample_cohort(rng: np.random.Generator, scenario: Scenario) -> list[int]:
    """The round's cohort, drawn as roost's uniform sampling draws it."""
    return sorted(rng.choice(scenario.num_clients, size=scenario.cohort, replace=False).tolist())
