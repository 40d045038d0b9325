"""Aggregators: combine the cohort's (transformed) updates into one.

`aggregate(updates, template, state)` consumes `(update, weight)` pairs one at a time as results
stream in. Mean-type aggregators keep a running weighted sum, so server memory is O(model) however
many clients report. The median, trimmed mean, Krum and Bulyan need every update and keep them
(O(cohort × model)), as their docstrings say.

One rule holds for every aggregator: an update with weight 0 takes no part in the round (a client
with no examples under the default weighting, for example). The robust aggregators otherwise ignore
the size of the weights, as in their papers; Multi-Krum averages the updates it keeps with them.

Every aggregator can be used on its own, outside any strategy:

    aggregate, state, _ = TrimmedMean(beta=0.2).aggregate(
        [(update, 1.0) for update in updates], template, ()
    )
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from roost.core.types import Parameters
from roost.errors import ConfigurationError, RoostError
from roost.strategy.base import Aggregator, Measurements, State


class NotEnoughUpdatesError(RoostError, ValueError):
    """A robust aggregator received fewer updates than it needs to tolerate its attackers."""


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    """Sum in float64 whatever the float width, so thousands of clients lose no precision."""
    return np.dtype(np.float64) if dtype.itemsize <= 8 else dtype


# Accumulate in blocks of this many elements: the float64 temporary stays a few MB however large
# the model, so the server's peak memory is the running sum plus the update being added.
_BLOCK = 1 << 20


def accumulate(running: np.ndarray, array: np.ndarray, weight: float) -> None:
    """running += weight · array, in place, computed in running's dtype, block by block."""
    flat_sum = running.reshape(-1)  # a view: running is always a fresh contiguous array
    flat = np.asarray(array).reshape(-1)
    # A sum that overflows is caught where the round ends (the model is kept, with a warning that
    # says so); NumPy's own RuntimeWarning would only repeat it, less clearly.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.size, _BLOCK):
            stop = start + _BLOCK
            flat_sum[start:stop] += np.multiply(flat[start:stop], weight, dtype=flat_sum.dtype)


def divided(running: np.ndarray, total: float, dtype: np.dtype) -> np.ndarray:
    """running / total, written straight into a new array of `dtype` (no float64 temporary)."""
    out = np.empty(running.shape, dtype)
    np.divide(running, total, out=out, casting="unsafe")
    return out


def _check_weight(weight: float) -> None:
    if not (weight >= 0 and np.isfinite(weight)):
        raise ValueError(f"aggregation weight must be finite and >= 0, got {weight}")


def _positive(updates: Iterable[tuple[Parameters, float]]) -> Iterable[tuple[Parameters, float]]:
    """The pairs with positive weight (a weight of 0 takes no part); bad weights are errors."""
    for update, weight in updates:
        _check_weight(weight)
        if weight > 0:
            yield update, float(weight)


# -- streaming means ----------------------------------------------------------------------------


def weighted_sum(
    updates: Iterable[tuple[Parameters, float]], template: Parameters
) -> tuple[list[np.ndarray], float]:
    """Σ wᵢ·updateᵢ (in float64, O(model) memory) and Σ wᵢ over the pairs with positive weight."""
    sums = [np.zeros(a.shape, accumulation_dtype(a.dtype)) for a in template]
    total = 0.0
    for update, weight in _positive(updates):
        for running, array in zip(sums, update, strict=True):
            accumulate(running, array, weight)
        total += weight
    return sums, total


def _mean(sums: list[np.ndarray], total: float, template: Parameters) -> Parameters | None:
    if total <= 0:
        return None
    return [
        divided(running, total, reference.dtype)
        for running, reference in zip(sums, template, strict=True)
    ]


@dataclass(frozen=True)
class WeightedMean(Aggregator):
    """The weighted mean of updates, computed as a running sum (O(model) memory).

    Weights come from the strategy's weighting (by default each client's `num_examples`), which
    makes this the FedAvg aggregate of McMahan et al. (2017).
    """

    def aggregate(
        self, updates: Iterable[tuple[Parameters, float]], template: Parameters, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        sums, total = weighted_sum(updates, template)
        return _mean(sums, total, template), state, {}


@dataclass(frozen=True)
class Mean(Aggregator):
    """The plain (uniform) mean of the updates with positive weight, as a running sum."""

    def aggregate(
        self, updates: Iterable[tuple[Parameters, float]], template: Parameters, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        uniform = ((update, 1.0) for update, _ in _positive(updates))
        sums, total = weighted_sum(uniform, template)
        return _mean(sums, total, template), state, {}


# -- buffering aggregators ----------------------------------------------------------------------


class _Buffering(Aggregator):
    """Keeps every update with positive weight, then `_combine`s them (O(cohort × model))."""

    def _combine(self, updates: list[Parameters], weights: np.ndarray) -> Parameters:
        raise NotImplementedError

    def aggregate(
        self, updates: Iterable[tuple[Parameters, float]], template: Parameters, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        kept: list[Parameters] = []
        weights: list[float] = []
        for update, weight in _positive(updates):
            kept.append(list(update))
            weights.append(weight)
        if not kept:
            return None, state, {}
        if len(kept) < self.min_updates:
            raise NotEnoughUpdatesError(
                f"{self!r} needs at least {self.min_updates} updates, got {len(kept)}; "
                "sample more clients per round or lower num_malicious_clients"
            )
        combined = self._combine(kept, np.asarray(weights))
        aggregate = [
            np.asarray(array).astype(reference.dtype, copy=False)
            for array, reference in zip(combined, template, strict=True)
        ]
        return aggregate, state, {}


def _layer(updates: list[Parameters], index: int) -> np.ndarray:
    """Stack layer `index` of every update along a new first axis, in float64."""
    return np.stack([np.asarray(u[index], dtype=np.float64) for u in updates])


@dataclass(frozen=True)
class CoordinateMedian(_Buffering):
    """The coordinate-wise median of the updates (Yin et al., 2018). Keeps every update."""

    def _combine(self, updates: list[Parameters], weights: np.ndarray) -> Parameters:
        return [np.median(_layer(updates, i), axis=0) for i in range(len(updates[0]))]


@dataclass(frozen=True)
class TrimmedMean(_Buffering):
    """Coordinate-wise β-trimmed mean (Yin et al., 2018). Keeps every update.

    For each coordinate the ⌊β·n⌋ largest and ⌊β·n⌋ smallest of the n values are dropped and the
    rest averaged. `beta` must be in [0, 0.5).
    """

    beta: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ConfigurationError(f"TrimmedMean beta must be in [0, 0.5), got {self.beta}")

    def _combine(self, updates: list[Parameters], weights: np.ndarray) -> Parameters:
        n = len(updates)
        cut = int(self.beta * n)
        return [
            np.sort(_layer(updates, i), axis=0)[cut : n - cut].mean(axis=0)
            for i in range(len(updates[0]))
        ]


def pairwise_squared_distances(updates: list[Parameters]) -> np.ndarray:
    """n×n matrix of squared L2 distances between whole updates (all arrays together), float64."""
    n = len(updates)
    distances = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            total = 0.0
            for a, b in zip(updates[i], updates[j], strict=True):
                diff = np.subtract(a, b, dtype=np.float64)
                total += float(np.vdot(diff, diff))
            distances[i, j] = distances[j, i] = total
    return distances


def krum_scores(distances: np.ndarray, num_malicious: int) -> np.ndarray:
    """Krum score of each update: the sum of squared distances to its n − f − 2 nearest others."""
    n = len(distances)
    neighbours = min(max(1, n - num_malicious - 2), n - 1)
    if neighbours <= 0:
        return np.zeros(n)
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(distances[i], i)
        scores[i] = np.sort(others)[:neighbours].sum()
    return scores


def _check_malicious(num_malicious_clients: int) -> None:
    if (
        isinstance(num_malicious_clients, bool)
        or not isinstance(num_malicious_clients, int)
        or num_malicious_clients < 0
    ):
        raise ConfigurationError(
            f"num_malicious_clients must be an int >= 0, got {num_malicious_clients!r}"
        )


@dataclass(frozen=True)
class KrumMean(_Buffering):
    """Krum and Multi-Krum (Blanchard et al., 2017). Keeps every update.

    Each update is scored by the sum of squared distances to its n − f − 2 nearest neighbours;
    the `num_selected` lowest-scoring updates are kept and averaged with their weights. With
    `num_selected=1` this is Krum; with `num_selected=None` it keeps n − f (Multi-Krum).
    Needs n ≥ 2f + 3 updates.
    """

    num_malicious_clients: int = 0
    num_selected: int | None = 1

    def __post_init__(self) -> None:
        _check_malicious(self.num_malicious_clients)
        selected = self.num_selected
        if selected is not None and (not isinstance(selected, int) or selected < 1):
            raise ConfigurationError(f"num_selected must be an int >= 1 or None, got {selected}")

    @property
    def min_updates(self) -> int:  # type: ignore[override]
        return max(2 * self.num_malicious_clients + 3, self.num_selected or 1)

    def select(self, updates: list[Parameters]) -> np.ndarray:
        """Indices of the updates Krum keeps, best first."""
        scores = krum_scores(pairwise_squared_distances(updates), self.num_malicious_clients)
        keep = self.num_selected or len(updates) - self.num_malicious_clients
        return np.argsort(scores, kind="stable")[:keep]

    def _combine(self, updates: list[Parameters], weights: np.ndarray) -> Parameters:
        chosen = self.select(updates)
        w = weights[chosen] / weights[chosen].sum()
        return [
            np.tensordot(w, _layer([updates[k] for k in chosen], i), axes=1)
            for i in range(len(updates[0]))
        ]


@dataclass(frozen=True)
class BulyanMean(_Buffering):
    """Bulyan (El Mhamdi et al., 2018). Keeps every update; needs n ≥ 4f + 3 updates.

    Krum is applied repeatedly to pick θ = n − 2f updates (each pick leaves the candidate set);
    then, coordinate by coordinate, the β = θ − 2f values closest to the median of the θ are
    averaged.
    """

    num_malicious_clients: int = 0

    def __post_init__(self) -> None:
        _check_malicious(self.num_malicious_clients)

    @property
    def min_updates(self) -> int:  # type: ignore[override]
        return 4 * self.num_malicious_clients + 3

    def select(self, updates: list[Parameters]) -> list[int]:
        """Indices of the θ = n − 2f updates chosen by repeated Krum, in the order picked."""
        f = self.num_malicious_clients
        distances = pairwise_squared_distances(updates)
        remaining = list(range(len(updates)))
        chosen: list[int] = []
        for _ in range(len(updates) - 2 * f):
            sub = distances[np.ix_(remaining, remaining)]
            best = int(np.argmin(krum_scores(sub, f)))
            chosen.append(remaining.pop(best))
        return chosen

    def _combine(self, updates: list[Parameters], weights: np.ndarray) -> Parameters:
        chosen = self.select(updates)
        beta = len(chosen) - 2 * self.num_malicious_clients
        result = []
        for i in range(len(updates[0])):
            values = _layer([updates[k] for k in chosen], i)
            median = np.median(values, axis=0)
            order = np.argsort(np.abs(values - median), axis=0, kind="stable")[:beta]
            result.append(np.take_along_axis(values, order, axis=0).mean(axis=0))
        return result


# -- q-FFL --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QFFLMean(Aggregator):
    """q-FFL's aggregation (Li et al., 2020, q-FedAvg), as a running sum (O(model) memory).

    The weight passed with each update must be that client's loss F_k (see `QFedAvg`, which
    reads it from the client's fit metrics). `learning_rate` is the clients' learning rate; its
    inverse L estimates the Lipschitz constant. With q = 0 this is the uniform mean.
    """

    q_param: float = 0.2
    learning_rate: float = 0.1

    def __post_init__(self) -> None:
        if not self.q_param >= 0:
            raise ConfigurationError(f"q_param must be >= 0, got {self.q_param}")
        if not self.learning_rate > 0:
            raise ConfigurationError(f"qffl_learning_rate must be > 0, got {self.learning_rate}")

    def aggregate(
        self, updates: Iterable[tuple[Parameters, float]], template: Parameters, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        q, lipschitz = self.q_param, 1.0 / self.learning_rate
        sums = [np.zeros(a.shape, accumulation_dtype(a.dtype)) for a in template]
        h = 0.0
        for update, weight in updates:
            # Here the weight is the client's loss F_k; q-FFL reweights by F_k^q itself.
            _check_weight(weight)
            loss = weight + 1e-10  # keeps F^(q-1) finite for a client with zero loss
            scale = loss**q
            squared_norm = sum(float(np.vdot(u, u)) for u in update)
            # Δw_k = L·(w − w_k) = −L·update;  Δ_k = F^q·Δw_k;  h_k = q·F^(q−1)·‖Δw_k‖² + L·F^q
            for running, array in zip(sums, update, strict=True):
                accumulate(running, array, -scale * lipschitz)
            h += q * loss ** (q - 1) * lipschitz**2 * squared_norm + lipschitz * scale
        if h <= 0:
            return None, state, {}
        # w_next = w − ΣΔ_k / Σh_k, returned as an update for the server optimizer.
        aggregate = [
            divided(running, -h, reference.dtype)
            for running, reference in zip(sums, template, strict=True)
        ]
        return aggregate, state, {}
