"""Server optimizers: turn the aggregated pseudo-gradient into the next global model.

The pseudo-gradient is Δ = aggregate − global (Reddi et al., 2020). A server optimizer maps
(global parameters, Δ, state) to (new global parameters, new state); its state is plain arrays and
scalars so the server can checkpoint it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from roost.core.types import Parameters

OptimizerState = dict[str, Any]


class ServerOptimizer(Protocol):
    def init(self, parameters: Parameters) -> OptimizerState:
        """The optimizer's state before the first round."""
        ...

    def apply(
        self, parameters: Parameters, delta: Parameters, state: OptimizerState
    ) -> tuple[Parameters, OptimizerState]:
        """Return the next global parameters and state."""
        ...


class ServerSGD:
    """x ← x + η·Δ. With η = 1 (the default) the new model is the aggregate itself: plain FedAvg."""

    def __init__(self, learning_rate: float = 1.0) -> None:
        if not learning_rate > 0:
            raise ValueError(f"server learning_rate must be > 0, got {learning_rate}")
        self.learning_rate = learning_rate

    def init(self, parameters: Parameters) -> OptimizerState:
        return {}

    def apply(
        self, parameters: Parameters, delta: Parameters, state: OptimizerState
    ) -> tuple[Parameters, OptimizerState]:
        return [
            (p + self.learning_rate * d).astype(p.dtype, copy=False)
            for p, d in zip(parameters, delta, strict=True)
        ], state

    def __repr__(self) -> str:
        return f"ServerSGD(learning_rate={self.learning_rate})"


def subtract(a: Parameters, b: Parameters) -> Parameters:
    """a − b, array by array, in a's dtype."""
    return [np.subtract(x, y, dtype=x.dtype) for x, y in zip(a, b, strict=True)]
