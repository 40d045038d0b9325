"""Data sets and partitioners for simulations.

Partitioners split sample indices across clients (seeded; every sample exactly once). Loaders
return NumPy arrays: scikit-learn's digits (`roost.data.bundled_digits`), data made by code
(`roost.data.synthetic`), and CIFAR-10 / MNIST from disk or a one-time download.
"""

from roost.data._files import DatasetUnavailableError
from roost.data.cifar10 import load_cifar10
from roost.data.mnist import load_mnist
from roost.data.partition import (
    dirichlet_partition,
    format_label_counts,
    iid_partition,
    label_counts,
    pathological_partition,
    quantity_skew_partition,
    quantity_skew_sizes,
    shard_partition,
)
from roost.data.synthetic import make_cifar_like, make_classification

__all__ = [
    "DatasetUnavailableError",
    "dirichlet_partition",
    "format_label_counts",
    "iid_partition",
    "label_counts",
    "load_cifar10",
    "load_mnist",
    "make_cifar_like",
    "make_classification",
    "pathological_partition",
    "quantity_skew_partition",
    "quantity_skew_sizes",
    "shard_partition",
]
