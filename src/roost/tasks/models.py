"""Small PyTorch models used by roost's own tasks (imports torch)."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression, `logits = x @ weight + bias`.

    A linear layer like `nn.Linear(num_features, num_classes)`, except that `weight` is stored as
    (num_features, num_classes): its parameters are then exactly the NumPy demo's (`roost.apps.
    softmax`), so strategies, evaluation and saved models work the same with or without torch.
    Starts from zeros, as the NumPy demo does.
    """

    def __init__(self, num_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_features, num_classes))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias
