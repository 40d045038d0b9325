"""Weighted means that cannot overflow, however large the weights and values are."""

from __future__ import annotations

import math
from collections.abc import Iterable


class RunningMean:
    """The weighted mean of a stream of finite values, which cannot overflow.

    It is Σ wᵢ·xᵢ / Σ wᵢ while that sum is finite (so results stay the same, bit for bit, as the
    plain formula's), and otherwise a convex combination kept alongside: each step blends the
    mean so far with the new value by their shares of the total weight, so every intermediate
    stays within the range of the values seen, and a loss of 1e300 weighted by a million examples
    neither overflows nor becomes NaN.
    """

    def __init__(self) -> None:
        self._sum = 0.0
        self._blend = 0.0
        self.total = 0.0

    @property
    def mean(self) -> float:
        """The weighted mean so far (0 before any positive weight)."""
        if self.total > 0 and math.isfinite(self._sum):
            return self._sum / self.total
        return self._blend

    def add(self, value: float, weight: float) -> None:
        """Add `value` with `weight` (>= 0); a weight of 0 leaves the mean as it is."""
        if weight <= 0:
            return
        self._sum += weight * float(value)
        self.total += weight
        share = weight / self.total
        self._blend = (1.0 - share) * self._blend + share * float(value)


def weighted_mean(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The mean of `(weight, value)` pairs; None when the weights add up to 0."""
    running = RunningMean()
    for weight, value in pairs:
        running.add(value, weight)
    return running.mean if running.total > 0 else None
