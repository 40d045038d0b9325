"""Ready-made metric aggregation functions for `fit_metrics_aggregation_fn` and friends."""

from __future__ import annotations

import numbers

from roost.core.types import Metrics


def weighted_average(pairs: list[tuple[int, Metrics]]) -> Metrics:
    """Example-weighted mean of every numeric metric the clients report.

    `pairs` is `[(num_examples, metrics), ...]`; a metric missing from some clients is averaged
    over the clients that report it. Non-numeric metrics are left out.
    """
    sums: dict[str, float] = {}
    weights: dict[str, int] = {}
    for num_examples, metrics in pairs:
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            sums[name] = sums.get(name, 0.0) + num_examples * float(value)
            weights[name] = weights.get(name, 0) + num_examples
    return {name: sums[name] / weights[name] for name in sums if weights[name] > 0}
