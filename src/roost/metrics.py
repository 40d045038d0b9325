"""Ready-made metric aggregation functions for `fit_metrics_aggregation_fn` and friends."""

from __future__ import annotations

import numbers

from roost.core.means import RunningMean
from roost.core.types import Metrics


def weighted_average(pairs: list[tuple[int, Metrics]]) -> Metrics:
    """Example-weighted mean of every numeric metric the clients report.

    `pairs` is `[(num_examples, metrics), ...]`; a metric missing from some clients is averaged
    over the clients that report it. Non-numeric metrics are left out.
    """
    means: dict[str, RunningMean] = {}
    for num_examples, metrics in pairs:
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            # A running mean: large values times large example counts cannot overflow.
            means.setdefault(name, RunningMean()).add(float(value), num_examples)
    return {name: mean.mean for name, mean in means.items() if mean.total > 0}
