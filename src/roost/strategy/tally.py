"""Turning a stream of fit results into the weighted, transformed updates an aggregator adds.

The tally is a fold: `FitSteps.step(tally, client_id, result)` is a pure step that returns the
next `Tally` (and the client's weighted update, if it has one); `tally_updates` streams the updates
to the aggregator and returns the final `Tally` as its value, which `Returning` keeps, since the
aggregator reads the stream with a `for` loop that drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from roost.core.means import RunningMean
from roost.core.types import ClientId, EvaluateRes, Failure, FitRes, Metrics, Outcome, Parameters
from roost.errors import InvalidMessageError
from roost.strategy.aggregators import NotEnoughUpdatesError
from roost.strategy.base import Aggregator, PartialFit, State, UpdateTransform, Weighting
from roost.strategy.optimizers import UpdateFn

log = logging.getLogger(__name__)

WeightedUpdate = tuple[Parameters, float]
ItemT = TypeVar("ItemT")
ValueT = TypeVar("ValueT")


def _check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
        raise InvalidMessageError(f"weight_fn returned {weight!r}, not a number")
    weight = float(weight)
    if not (np.isfinite(weight) and weight >= 0):
        raise InvalidMessageError(f"weight_fn returned {weight}; weights must be finite, >= 0")
    return weight


class Tally(NamedTuple):
    """What a round's fit results added up to so far; each step returns a new one."""

    weighting: State
    """The weighting's state."""
    transforms: State
    """The update transforms' state."""
    fit_metrics: tuple[tuple[int, Metrics], ...] = ()
    """`(num_examples, metrics)` of every result that was weighed and transformed."""
    failures: int = 0
    """Failures, and results left out because their weight could not be computed."""


@dataclass(frozen=True)
class FitSteps:
    """The strategy's parts a fit result goes through, for one round."""

    weight_fn: Weighting
    update_fn: UpdateFn
    update_transforms: UpdateTransform
    server_round: int
    parameters: Parameters
    """The global model the cohort trained from."""

    def step(
        self, tally: Tally, client_id: ClientId, result: FitRes | Failure
    ) -> tuple[Tally, WeightedUpdate | None]:
        """The next tally, and `result`'s weighted, transformed update (None: none to add)."""
        if isinstance(result, Failure):
            return tally._replace(failures=tally.failures + 1), None
        if not isinstance(result, FitRes):
            raise TypeError(f"aggregate_fit got a {type(result).__name__}, not a FitRes")
        try:
            weight, weighting_state = self.weight_fn.weigh(client_id, result, tally.weighting)
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
            return tally._replace(failures=tally.failures + 1), None
        update = self.update_fn(result.parameters, self.parameters)
        update, transforms_state = self.update_transforms.apply(update, tally.transforms)
        tally = tally._replace(
            weighting=weighting_state,
            transforms=transforms_state,
            fit_metrics=(*tally.fit_metrics, (result.num_examples, result.metrics)),
        )
        return tally, (update, weight)


def tally_updates(
    steps: FitSteps, outcomes: Iterable[Outcome], start: Tally
) -> Generator[WeightedUpdate, None, Tally]:
    """Yield each outcome's weighted update as it arrives; return the final tally."""
    tally = start
    for client_id, result in outcomes:
        tally, weighted = steps.step(tally, client_id, result)
        if weighted is not None:
            yield weighted
        # Let this client's arrays go before the next result arrives (O(model) memory).
        del weighted, result
    return tally


class Returning(Generic[ItemT, ValueT]):
    """A generator's items, once, keeping the value it returns (a `for` loop drops it)."""

    def __init__(self, generator: Generator[ItemT, None, ValueT]) -> None:
        self._generator = generator
        self._value: tuple[ValueT] | None = None

    def __iter__(self) -> Iterator[ItemT]:
        return self

    def __next__(self) -> ItemT:
        try:
            return next(self._generator)
        except StopIteration as stop:
            self._value = (stop.value,)
            raise

    def result(self) -> ValueT:
        """The generator's return value; reads what the consumer left unread first, so the
        value always covers the whole stream."""
        if self._value is None:
            for _ in self:
                pass
        assert self._value is not None
        return self._value[0]


def aggregate_outcomes(
    aggregator: Aggregator, steps: FitSteps, outcomes: Iterable[Outcome], state: dict[str, State]
) -> PartialFit:
    """The cohort's outcomes tallied and aggregated as they stream in, and the next state.

    An aggregator that gets fewer updates than it needs leaves the aggregate None (the model
    stays unchanged) and its state as it was.
    """
    start = Tally(state["weighting"], state["transforms"])
    updates = Returning(tally_updates(steps, outcomes, start))
    try:
        aggregate, aggregator_state, measurements = aggregator.aggregate(
            updates, steps.parameters, state["aggregator"]
        )
    except NotEnoughUpdatesError as error:
        log.warning("fit_round %d: %s: global model unchanged", steps.server_round, error)
        aggregate, aggregator_state, measurements = None, state["aggregator"], {}
    tally = updates.result()
    state = {
        **state,
        "weighting": tally.weighting,
        "transforms": tally.transforms,
        "aggregator": aggregator_state,
    }
    return PartialFit(aggregate, state, tally.fit_metrics, measurements, tally.failures)


def aggregate_metrics(
    function: Callable[[list[tuple[int, Metrics]]], Metrics] | None,
    pairs: Sequence[tuple[int, Metrics]],
) -> Metrics:
    """The user's metrics aggregation of a round's `(num_examples, metrics)` pairs ({} without one
    or without pairs)."""
    if function is None or not pairs:
        return {}
    return dict(function(list(pairs)))


def mean_evaluation(
    outcomes: Iterable[Outcome],
    accept_failures: bool,
    function: Callable[[list[tuple[int, Metrics]]], Metrics] | None,
) -> tuple[float | None, Metrics]:
    """An evaluate phase's example-weighted mean loss and aggregated metrics (None, {} when
    nothing usable arrived, or a client failed and `accept_failures` is False)."""
    loss = RunningMean()  # not Σ loss·n / Σ n, which overflows for large losses
    eval_metrics: list[tuple[int, Metrics]] = []
    failures = 0
    for _, result in outcomes:
        if isinstance(result, Failure):
            failures += 1
            continue
        assert isinstance(result, EvaluateRes)
        loss.add(result.loss, result.num_examples)
        eval_metrics.append((result.num_examples, result.metrics))
    if (failures and not accept_failures) or loss.total == 0:
        return None, {}
    return loss.mean, aggregate_metrics(function, eval_metrics)
