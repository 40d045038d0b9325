"""numpy_app: the model (linear regression), each partition's data, training and evaluation."""

import numpy as np

NUM_FEATURES = 4
TRUE_WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0])


def initial_weights() -> list[np.ndarray]:
    return [np.zeros(NUM_FEATURES), np.zeros(1)]


def load_data(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """A partition of a synthetic regression problem (its size depends on the partition)."""
    rng = np.random.default_rng([partition_id, num_partitions])
    x = rng.normal(size=(20 + 5 * partition_id, NUM_FEATURES))
    y = x @ TRUE_WEIGHTS + 0.5 + 0.1 * rng.normal(size=len(x))
    return x, y


def loss(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    w, b = weights
    return float(np.mean((x @ w + b - y) ** 2))


def train(
    weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, epochs: int
) -> list[np.ndarray]:
    """Full-batch gradient descent on the squared error (deterministic)."""
    w, b = (array.copy() for array in weights)
    for _ in range(epochs):
        error = x @ w + b - y
        w -= lr * 2 * x.T @ error / len(y)
        b -= lr * 2 * error.mean(keepdims=True)
    return [w, b]
