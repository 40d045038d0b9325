"""Weighted means that cannot overflow, however large the weights and values are."""

from __future__ import annotations

from collections.abc import Iterable


class RunningMean:
    """The weighted mean of a stream of finite values, kept as a convex combination.

    Each step blends the mean so far with the new value by their shares of the total weight, so
    every intermediate stays within the range of the values seen: unlike Σ wᵢ·xᵢ / Σ wᵢ, a loss of
    1e300 weighted by a million examples neither overflows nor becomes NaN.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.total = 0.0

    def add(self, value: float, weight: float) -> None:
        """Add `value` with `weight` (>= 0); a weight of 0 leaves the mean as it is."""
        if weight <= 0:
            return
        self.total += weight
        share = weight / self.total
        self.mean = (1.0 - share) * self.mean + share * float(value)


def weighted_mean(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The mean of `(weight, value)` pairs; None when the weights add up to 0."""
    running = RunningMean()
    for weight, value in pairs:
        running.add(value, weight)
    return running.mean if running.total > 0 else None
