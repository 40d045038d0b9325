"""Aggregators: combine the cohort's (transformed) updates into one.

An aggregator starts an accumulator for each round; the round loop feeds it one client update at a
time as results stream in. Mean-type aggregators keep a running weighted sum, so server memory is
O(model) however many clients report. Aggregators that need every update (median, Krum) buffer them
and say so with `buffers_updates = True`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from roost.core.types import Parameters


class Accumulator(Protocol):
    def add(self, update: Parameters, weight: float) -> None:
        """Take one client's update with its (non-negative) weight."""
        ...

    def result(self) -> Parameters | None:
        """The aggregate, or None when nothing with positive weight was added."""
        ...


class Aggregator(Protocol):
    buffers_updates: bool

    def start(self, template: Parameters) -> Accumulator:
        """Begin a round whose updates are shaped like `template`."""
        ...


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    """Sum in float64 whatever the model's float width, so thousands of clients lose no precision."""
    return np.dtype(np.float64) if dtype.itemsize <= 8 else dtype


class _WeightedSum:
    def __init__(self, template: Parameters) -> None:
        self._template = template
        self._sums = [np.zeros(a.shape, accumulation_dtype(a.dtype)) for a in template]
        self._total = 0.0

    def add(self, update: Parameters, weight: float) -> None:
        if weight < 0 or not np.isfinite(weight):
            raise ValueError(f"aggregation weight must be finite and >= 0, got {weight}")
        if weight == 0:
            return
        for running, array in zip(self._sums, update, strict=True):
            running += weight * array.astype(running.dtype, copy=False)
        self._total += weight

    def result(self) -> Parameters | None:
        if self._total <= 0:
            return None
        return [
            (running / self._total).astype(reference.dtype, copy=False)
            for running, reference in zip(self._sums, self._template, strict=True)
        ]


class WeightedMean:
    """The weighted mean of updates, computed as a running sum (O(model) memory).

    Weights come from the strategy's weighting (by default each client's `num_examples`), which
    makes this the FedAvg aggregate of McMahan et al. (2017).
    """

    buffers_updates = False

    def start(self, template: Parameters) -> Accumulator:
        return _WeightedSum(template)

    def __repr__(self) -> str:
        return "WeightedMean()"
