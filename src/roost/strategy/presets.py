"""Named strategies users know, each a thin preset of `Strategy`'s parts."""

from __future__ import annotations

from typing import Any

from roost.strategy.aggregators import WeightedMean
from roost.strategy.optimizers import ServerSGD
from roost.strategy.strategy import Strategy, weight_by_num_examples


class FedAvg(Strategy):
    """Federated Averaging (McMahan et al., 2017).

    The next global model is the mean of the clients' models weighted by their `num_examples`,
    computed as a running sum. Accepts every knob of `Strategy` (fractions, minimums,
    `initial_parameters`, `evaluate_fn`, config functions, metric aggregation functions,
    `accept_failures`).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("aggregator", WeightedMean())
        kwargs.setdefault("weight_fn", weight_by_num_examples)
        kwargs.setdefault("server_optimizer", ServerSGD(learning_rate=1.0))
        super().__init__(**kwargs)
