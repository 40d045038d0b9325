"""Multinomial logistic (softmax) regression in NumPy: the demo's model, no ML framework needed."""

from __future__ import annotations

import numpy as np

from roost.core.types import Parameters


def init_parameters(num_features: int, num_classes: int) -> Parameters:
    """Zero weights and biases: a deterministic start that needs no seed."""
    return [np.zeros((num_features, num_classes)), np.zeros(num_classes)]


def log_probabilities(parameters: Parameters, x: np.ndarray) -> np.ndarray:
    weights, bias = parameters
    logits = x @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def loss_and_accuracy(parameters: Parameters, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y)."""
    if len(y) == 0:
        return 0.0, 0.0
    log_p = log_probabilities(parameters, x)
    loss = -float(log_p[np.arange(len(y)), y].mean())
    accuracy = float((log_p.argmax(axis=1) == y).mean())
    return loss, accuracy


def gradients(parameters: Parameters, x: np.ndarray, y: np.ndarray) -> Parameters:
    """Gradient of the mean cross-entropy over the batch."""
    probabilities = np.exp(log_probabilities(parameters, x))
    probabilities[np.arange(len(y)), y] -= 1.0
    probabilities /= len(y)
    return [x.T @ probabilities, probabilities.sum(axis=0)]


def train_sgd(
    parameters: Parameters,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
    proximal_mu: float = 0.0,
) -> Parameters:
    """Mini-batch SGD, reshuffling every epoch; `proximal_mu` adds FedProx's (μ/2)‖w − w₀‖²."""
    start = [p.copy() for p in parameters]
    current = [p.copy() for p in parameters]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for begin in range(0, len(y), batch_size):
            batch = order[begin : begin + batch_size]
            grads = gradients(current, x[batch], y[batch])
            for p, g, p0 in zip(current, grads, start, strict=True):
                if proximal_mu:
                    g = g + proximal_mu * (p - p0)
                p -= learning_rate * g
    return current
