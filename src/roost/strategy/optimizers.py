"""Server optimizers: turn the aggregated pseudo-gradient into the next global model.

The pseudo-gradient is Δ = aggregate − global (Reddi et al., 2020). A server optimizer maps
(global parameters, Δ, state) to (new global parameters, new state). It never changes its inputs
in place, and its state is a dict of lists of float64 arrays and Python scalars, so the server can
checkpoint it and a restored run continues exactly as an uninterrupted one.

The adaptive optimizers follow Algorithm 2 of Reddi et al. (2020), without bias correction:

    m ← β₁·m + (1 − β₁)·Δ
    v ← v + Δ²                                  (Adagrad)
    v ← β₂·v + (1 − β₂)·Δ²                      (Adam)
    v ← v − (1 − β₂)·Δ²·sign(v − Δ²)            (Yogi)
    x ← x + η·m / (√v + τ)

with m starting at 0 and v at τ².

`convention="flower"` follows Flower's FedAdagrad, FedAdam and FedYogi instead: v starts at 0,
and Adam's step is scaled by √(1 − β₂^(t+1)) / (1 − β₁^(t+1)) with t the server round (Flower's
own index; Adagrad and Yogi have no such factor). Ported Flower apps use it so that their numbers
match Flower's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from roost.core.types import Parameters
from roost.errors import ConfigurationError
from roost.strategy.base import ServerOptimizer, State


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value}")
    return float(value)


def _unit_interval(name: str, value: float) -> float:
    if not 0 <= value < 1:
        raise ConfigurationError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _step(parameters: Parameters, direction: list[np.ndarray], scale: float) -> Parameters:
    """x + scale·direction, in each parameter's dtype (one new array per parameter)."""
    stepped = []
    for p, d in zip(parameters, direction, strict=True):
        new = np.multiply(d, scale)
        new += p
        # asarray: NumPy's arithmetic on a 0-d array (BatchNorm's step count) gives a scalar
        stepped.append(np.asarray(new.astype(p.dtype, copy=False)))
    return stepped


def _float64(arrays: Parameters) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


@dataclass(frozen=True)
class ServerSGD(ServerOptimizer):
    """x ← x + η·v with v ← μ·v + Δ (heavy-ball momentum; with μ = 0, v = Δ).

    With η = 1 and μ = 0 (the defaults) the new model is the aggregate itself: plain FedAvg.
    With μ > 0 this is FedAvgM (Hsu et al., 2019).
    """

    learning_rate: float = 1.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _positive("server learning_rate", self.learning_rate)
        _unit_interval("server momentum", self.momentum)

    def init(self, parameters: Parameters) -> State:
        if self.momentum == 0:
            return {}
        return {"momentum": [np.zeros(p.shape) for p in parameters]}

    def apply(
        self, parameters: Parameters, delta: Parameters, state: State
    ) -> tuple[Parameters, State]:
        if self.momentum == 0:
            return _step(parameters, list(delta), self.learning_rate), state
        velocity = [
            self.momentum * v + d for v, d in zip(state["momentum"], _float64(delta), strict=True)
        ]
        return _step(parameters, velocity, self.learning_rate), {"momentum": velocity}


Convention = Literal["reddi", "flower"]
"""Which paper's arithmetic an adaptive optimizer follows (see the module docstring)."""

CONVENTIONS = ("reddi", "flower")


class _Adaptive(ServerOptimizer):
    """Shared shape of the three adaptive optimizers; subclasses are dataclasses of their
    settings and define `_second_moment` (and, for Flower's Adam, `_step_scale`)."""

    learning_rate: float
    beta_1: float
    beta_2: float
    tau: float
    convention: Convention

    def __post_init__(self) -> None:
        _positive(f"{type(self).__name__} learning_rate (eta)", self.learning_rate)
        _unit_interval("beta_1", self.beta_1)
        _unit_interval("beta_2", self.beta_2)
        _positive("tau", self.tau)
        if self.convention not in CONVENTIONS:
            raise ConfigurationError(
                f"convention must be 'reddi' (Reddi et al.: v starts at tau², no bias "
                f"correction) or 'flower' (Flower's arithmetic), got {self.convention!r}"
            )

    def init(self, parameters: Parameters) -> State:
        if self.convention == "flower":
            # The server round goes into the state: Flower's Adam scales its step by it.
            return {
                "m": [np.zeros(p.shape) for p in parameters],
                "v": [np.zeros(p.shape) for p in parameters],
                "round": 0,
            }
        return {
            "m": [np.zeros(p.shape) for p in parameters],
            "v": [np.full(p.shape, self.tau**2) for p in parameters],
        }

    def at_round(self, state: State, server_round: int) -> State:
        if self.convention == "flower":
            return {**state, "round": server_round}
        return state

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_scale(self, state: State) -> float:
        """The factor on η this round (1 but for Flower's Adam)."""
        return 1.0

    def apply(
        self, parameters: Parameters, delta: Parameters, state: State
    ) -> tuple[Parameters, State]:
        m_new, v_new, direction = [], [], []
        for m, v, d in zip(state["m"], state["v"], _float64(delta), strict=True):
            m = self.beta_1 * m + (1 - self.beta_1) * d
            v = self._second_moment(v, d * d)
            m_new.append(m)
            v_new.append(v)
            direction.append(m / (np.sqrt(v) + self.tau))
        scale = self.learning_rate * self._step_scale(state)
        return _step(parameters, direction, scale), {**state, "m": m_new, "v": v_new}


@dataclass(frozen=True)
class ServerAdagrad(_Adaptive):
    """Adagrad on the server (FedAdagrad): v ← v + Δ² (β₂ is unused)."""

    learning_rate: float = 0.1
    beta_1: float = 0.0
    tau: float = 1e-9
    convention: Convention = "reddi"
    beta_2 = 0.0  # not a setting of Adagrad: its second moment is a plain sum

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v + squared


@dataclass(frozen=True)
class ServerAdam(_Adaptive):
    """Adam on the server (FedAdam): v ← β₂·v + (1 − β₂)·Δ²."""

    learning_rate: float = 0.1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-9
    convention: Convention = "reddi"

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * squared

    def _step_scale(self, state: State) -> float:
        if self.convention != "flower":
            return 1.0
        t = state["round"] + 1.0  # Flower's exponent: its server round plus one
        return float(np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t))


@dataclass(frozen=True)
class ServerYogi(ServerAdam):
    """Yogi on the server (FedYogi): Adam (β₁, β₂ and their defaults too) but for the second
    moment, v ← v − (1 − β₂)·Δ²·sign(v − Δ²)."""

    learning_rate: float = 0.01
    tau: float = 1e-3

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * squared * np.sign(v - squared)

    def _step_scale(self, state: State) -> float:
        return 1.0  # Flower's Yogi has no bias correction


def subtract(a: Parameters, b: Parameters) -> Parameters:
    """a − b, array by array, in a's dtype."""
    return [np.subtract(x, y, dtype=x.dtype) for x, y in zip(a, b, strict=True)]


UpdateFn = Callable[[Parameters, Parameters], Parameters]
"""`(client result parameters, global parameters) -> the client's update`."""


def parameter_delta(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns trained parameters: result − global."""
    return subtract(result, global_parameters)


def negative_gradient(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns a gradient (FedSGD): −gradient, a descent direction."""
    return [np.negative(gradient) for gradient in result]
