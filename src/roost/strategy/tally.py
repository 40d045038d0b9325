"""Turning a stream of fit results into the weighted, transformed updates an aggregator adds."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from roost.core.types import Failure, FitRes, Metrics, Outcome, Parameters
from roost.errors import InvalidMessageError

log = logging.getLogger(__name__)


def _check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
        raise InvalidMessageError(f"weight_fn returned {weight!r}, not a number")
    weight = float(weight)
    if not (np.isfinite(weight) and weight >= 0):
        raise InvalidMessageError(f"weight_fn returned {weight}; weights must be finite, >= 0")
    return weight


class FitTally:
    """Turns a stream of fit outcomes into weighted, transformed updates, threading the state."""

    def __init__(
        self, strategy: Any, server_round: int, parameters: Parameters, state: dict[str, Any]
    ) -> None:
        self.strategy = strategy  # its weighting, update_fn and transform
        self.server_round = server_round
        self.parameters = parameters
        self.state = state
        self.failures = 0
        self.metrics: list[tuple[int, Metrics]] = []

    def updates(self, outcomes: Iterable[Outcome]) -> Iterable[tuple[Parameters, float]]:
        strategy = self.strategy
        for client_id, result in outcomes:
            if isinstance(result, Failure):
                self.failures += 1
                continue
            if not isinstance(result, FitRes):
                raise TypeError(f"aggregate_fit got a {type(result).__name__}, not a FitRes")
            try:
                weight, weighting_state = strategy.weighting.weigh(
                    client_id, result, self.state["weighting"]
                )
                weight = _check_weight(weight)
            except Exception as error:  # a weighting that cannot handle this client drops it only
                reason = (
                    error
                    if isinstance(error, InvalidMessageError)
                    else f"weight_fn raised {type(error).__name__}: {error}"
                )
                log.warning(
                    "fit_round %d: client %s left out: %s", self.server_round, client_id, reason
                )
                self.failures += 1
                continue
            update = strategy.update_fn(result.parameters, self.parameters)
            update, transforms_state = strategy.transform.apply(update, self.state["transforms"])
            self.state = {
                **self.state,
                "weighting": weighting_state,
                "transforms": transforms_state,
            }
            self.metrics.append((result.num_examples, result.metrics))
            yield update, weight
            # Let this client's arrays go before the next result arrives (O(model) memory).
            del update, result
