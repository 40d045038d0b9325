"""Flower's classic built-in strategies' steps, computed by the roost preset of the same name.

`FedAvg`, `FedAdam`, … in `flwr.server.strategy` are classic `Strategy` classes whose six steps
(`configure_fit`, `aggregate_fit`, …) do what the roost preset does, through the round the loop
is running: sampling with the loop's generator, the preset's weighting, aggregator, server
optimizer and state tree (so `super().aggregate_fit(...)` in a subclass returns what the preset
would, and a checkpoint keeps the preset's state). A subclass that overrides none of the
`configure_*` / `aggregate_*` steps runs the preset's own round: streaming aggregation, no
`Parameters` in between.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from roost.compat.flwr.legacy import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    HeldParameters,
    Parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.server.classic import ClientFailure, ClientProxy, Strategy
from roost.compat.flwr.server.client_manager import ClientManager
from roost.core.types import ClientId, Failure, Metrics, Outcome, Scalar
from roost.core.types import EvaluateRes as RoostEvaluateRes
from roost.core.types import FitRes as RoostFitRes
from roost.core.types import Parameters as Arrays
from roost.errors import ConfigurationError
from roost.strategy.base import FitAggregate, RoundContext, State
from roost.strategy.options import NamedStrategy

_FIT_STEPS = ("configure_fit", "aggregate_fit")
_EVALUATE_STEPS = ("configure_evaluate", "aggregate_evaluate")


class BuiltIn(Strategy):
    """The steps of a classic built-in strategy, on its roost preset (`preset`)."""

    preset: ClassVar[type[NamedStrategy]]

    def _roost(self) -> Any:
        """This strategy as its roost preset: the same settings and parts, roost's steps."""
        view = copy.copy(self)
        view.__class__ = self.preset
        return view

    def _overrides(self, steps: tuple[str, ...]) -> bool:
        """Whether a subclass replaced one of `steps` (so the round must go through them)."""
        return any(getattr(type(self), step) is not getattr(BuiltIn, step) for step in steps)

    def __repr__(self) -> str:
        return self.preset.__repr__(self)

    # -- what roost's round loop calls -----------------------------------------------------

    def init(self, parameters: Arrays) -> dict[str, State]:
        return {**self._roost().init(parameters), "strategy": type(self).__name__}

    def initial_model(self) -> Arrays | None:
        if type(self).initialize_parameters is BuiltIn.initialize_parameters:
            return self._roost().initialize_parameters()
        return super().initial_model()

    def centralized_evaluation(
        self, server_round: int, parameters: Arrays
    ) -> tuple[float, Metrics] | None:
        if type(self).evaluate is BuiltIn.evaluate:
            return self._roost().evaluate(server_round, parameters)
        return super().centralized_evaluation(server_round, parameters)

    def fit_round(self, context: RoundContext, parameters: Arrays, state: State) -> FitAggregate:
        if not self._overrides(_FIT_STEPS):
            return self._roost().fit_round(context, parameters, state)
        if self.secure_aggregation is not None:
            # Flower's steps see each result; secure aggregation's point is that nobody does.
            raise ConfigurationError(
                f"{type(self).__name__} overrides configure_fit/aggregate_fit, whose results "
                "secure aggregation would hide; drop secure_aggregation or the override"
            )
        transforms = self.update_transforms.start_round(state["transforms"])
        return super().fit_round(context, parameters, {**state, "transforms": transforms})

    def evaluate_round(
        self, context: RoundContext, parameters: Arrays, state: State
    ) -> tuple[float | None, Metrics]:
        if not self._overrides(_EVALUATE_STEPS) or self.fraction_evaluate == 0:
            return self._roost().evaluate_round(context, parameters, state)
        return super().evaluate_round(context, parameters, state)

    # -- Flower's steps ----------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        arrays = self._roost().initialize_parameters()
        return None if arrays is None else HeldParameters(arrays)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        current = self.current_round("configure_fit")
        client_manager.wait_for(max(self.min_available_clients, self.min_fit_clients))
        clients = client_manager.all()
        cohort, current.state = self._roost().configure_fit(
            server_round,
            current.arrays_of(parameters),
            [current.ids.get(cid, cid) for cid in clients],
            current.rng,
            current.state,
        )
        return _flower_cohort(cohort, clients, parameters, FitIns)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        current = self.current_round("aggregate_fit")
        outcomes: list[Outcome] = [
            (
                current.client_id(client),
                RoostFitRes(parameters_to_ndarrays(res.parameters), res.num_examples, res.metrics),
            )
            for client, res in results
        ]
        outcomes += [_failure(current.ids, failure) for failure in failures]
        fitted = self._roost().aggregate_fit(
            server_round, current.parameters, outcomes, current.state
        )
        current.state = fitted.state
        current.measurements.update(fitted.measurements)
        if fitted.parameters is None:
            return None, dict(fitted.metrics)
        return HeldParameters(fitted.parameters), dict(fitted.metrics)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        current = self.current_round("configure_evaluate")
        if self.fraction_evaluate == 0:
            return []
        client_manager.wait_for(max(self.min_available_clients, self.min_evaluate_clients))
        clients = client_manager.all()
        cohort, _ = self._roost().configure_evaluate(
            server_round,
            current.arrays_of(parameters),
            [current.ids.get(cid, cid) for cid in clients],
            current.rng,
            current.state,
        )
        return _flower_cohort(cohort, clients, parameters, EvaluateIns)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        current = self.current_round("aggregate_evaluate")
        outcomes: list[Outcome] = [
            (
                current.client_id(client),
                RoostEvaluateRes(float(res.loss), res.num_examples, res.metrics),
            )
            for client, res in results
        ]
        outcomes += [_failure(current.ids, failure) for failure in failures]
        loss, metrics = self._roost().aggregate_evaluate(server_round, outcomes)
        return loss, dict(metrics)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return self._roost().evaluate(server_round, parameters_to_ndarrays(parameters))


def _flower_cohort(
    cohort: list[tuple[ClientId, Any]],
    clients: dict[str, ClientProxy],
    parameters: Parameters,
    kind: type,
) -> list[tuple[ClientProxy, Any]]:
    """roost's cohort as Flower's pairs: one instruction object for every client that shares
    roost's (as Flower's built-ins send one)."""
    made: dict[int, Any] = {}
    pairs = []
    for client_id, instruction in cohort:
        if id(instruction) not in made:
            made[id(instruction)] = kind(parameters, dict(instruction.config))
        pairs.append((clients[str(client_id)], made[id(instruction)]))
    return pairs


def _failure(ids: dict[str, ClientId], failure: Any) -> Outcome:
    """A Flower failure (a `ClientFailure`, another exception, or a `(client, result)` pair
    whose status is not OK) as roost's."""
    if isinstance(failure, ClientFailure):
        return failure.failure.client_id, failure.failure
    if isinstance(failure, tuple) and len(failure) == 2 and isinstance(failure[0], ClientProxy):
        client_id = ids.get(failure[0].cid, failure[0].cid)
        return client_id, Failure(client_id, f"status {failure[1].status}", "error")
    return "?", Failure("?", f"{type(failure).__name__}: {failure}", "error")


__all__ = ["BuiltIn"]
