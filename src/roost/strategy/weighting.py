"""Weightings for the mean-type aggregators: `(client_id, num_examples, metrics) -> weight`.

A weight must be a finite number >= 0; a client whose weight cannot be computed (a metric it did
not report, a negative value) is left out of the round with a warning, like a failed client.
Any plain function with that signature works as `Strategy(weight_fn=...)`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from roost.core.types import ClientId, Metrics
from roost.errors import InvalidMessageError

WeightFn = Callable[[ClientId, int, Metrics], float]


def weight_by_num_examples(client_id: ClientId, num_examples: int, metrics: Metrics) -> float:
    """FedAvg's weighting: each client counts as many times as it has training examples."""
    return float(num_examples)


def uniform_weight(client_id: ClientId, num_examples: int, metrics: Metrics) -> float:
    """Every client counts once, whatever its data size (clients with no examples included)."""
    return 1.0


def weight_by_metric(name: str, *, times_num_examples: bool = False) -> WeightFn:
    """Weight each client by a metric it reports in its fit metrics, such as a data quality score.

    With `times_num_examples=True` the weight is metric × num_examples (quality-scaled data size).
    A client that does not report `name`, or reports a negative or non-numeric value, is left out.
    """

    def weight(client_id: ClientId, num_examples: int, metrics: Metrics) -> float:
        if name not in metrics:
            raise InvalidMessageError(
                f"fit metrics have no {name!r} to weight by (got {sorted(metrics)}); "
                f"make the client report metrics[{name!r}]"
            )
        value = metrics[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidMessageError(f"metric {name!r} is {value!r}, not a number")
        value = float(value)
        return value * num_examples if times_num_examples else value

    weight.__name__ = f"weight_by_metric({name!r})"
    return weight
