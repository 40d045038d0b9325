"""The tutorial's pieces, shared by simulation.py, server.py and client.py.

A Keras network (Flatten 32×32×3 → Dense 64 relu → Dense 64 relu → Dense 10 softmax, Adam, sparse
categorical cross-entropy) trained on 10,000 CIFAR-10 images split across the clients, each keeping
10 % of its share for validation. The code is the tutorial's own, written against
`roost.compat.flwr`; only the imports differ from the Flower version.
"""

from __future__ import annotations

from functools import lru_cache

import keras
import numpy as np

from roost.compat.flwr.client import NumPyClient
from roost.compat.flwr.common import Metrics
from roost.data import DatasetUnavailableError, iid_partition, load_cifar10, make_cifar_like

NUM_IMAGES = 10_000
VALIDATION_SPLIT = 0.1


def load_model() -> keras.Model:
    model = keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@lru_cache(maxsize=2)
def load_images(num_images: int = NUM_IMAGES, download: bool = False):
    """The first `num_images` CIFAR-10 training images (uint8) and labels, or a stand-in.

    Real CIFAR-10 is read from disk (`$ROOST_DATA`, `~/.cache/roost/datasets` or
    `~/.keras/datasets`), or downloaded with `download=True`. When neither works, a CIFAR-shaped
    stand-in made by code is used, and a notice says so: its numbers are not CIFAR-10 numbers.
    """
    try:
        (x_train, y_train), _ = load_cifar10(download=download)
        print(f"using CIFAR-10: the first {num_images} of {len(y_train)} training images")
        return x_train[:num_images], y_train[:num_images]
    except DatasetUnavailableError as error:
        print(
            "NOTICE: CIFAR-10 is not available, so this run uses a CIFAR-shaped STAND-IN made "
            "by code (32x32x3 images, 10 classes, much easier than CIFAR-10). Its accuracy says "
            "nothing about CIFAR-10. To use the real data, run with --download or put "
            f"cifar-10-batches-bin/ (or -py/) in ~/.keras/datasets. ({error})",
            flush=True,
        )
        return make_cifar_like(num_images, seed=0)


def load_data(partition_id: int, num_partitions: int, num_images: int = NUM_IMAGES,
              download: bool = False):
    """This client's (x_train, y_train), (x_val, y_val): an IID share, 10 % kept for validation."""
    x, y = load_images(num_images, download)
    part = iid_partition(len(y), num_partitions, seed=0)[partition_id]
    x_part = x[part].astype("float32") / 255.0
    y_part = y[part]
    split = int(len(part) * (1 - VALIDATION_SPLIT))
    return (x_part[:split], y_part[:split]), (x_part[split:], y_part[split:])


class FlowerClient(NumPyClient):
    def __init__(self, model, x_train, y_train, x_val, y_val, epochs=1, batch_size=32):
        self.model = model
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.epochs, self.batch_size = epochs, batch_size

    def get_parameters(self, config):
        return self.model.get_weights()

    def fit(self, parameters, config):
        self.model.set_weights(parameters)
        self.model.fit(self.x_train, self.y_train, epochs=self.epochs,
                       batch_size=self.batch_size, verbose=0)
        return self.model.get_weights(), len(self.x_train), {}

    def evaluate(self, parameters, config):
        self.model.set_weights(parameters)
        loss, accuracy = self.model.evaluate(self.x_val, self.y_val, verbose=0)
        return loss, len(self.x_val), {"accuracy": accuracy}


def weighted_average(metrics: list[tuple[int, Metrics]]) -> Metrics:
    """The clients' accuracies, each weighted by its number of validation examples."""
    accuracies = [num_examples * m["accuracy"] for num_examples, m in metrics]
    examples = [num_examples for num_examples, _ in metrics]
    return {"accuracy": sum(accuracies) / sum(examples)}


def initial_weights() -> list[np.ndarray]:
    return load_model().get_weights()
