"""`flwr.server.strategy.Strategy`: Flower's classic strategy interface, on roost's round loop.

A strategy written against Flower's classic API (the six methods below, with Flower's signatures
and types) is a roost `Strategy` too: the round loop calls its `fit_round` / `evaluate_round`, and
those call the Flower steps at their named points:

    configure_fit(round, Parameters, ClientManager) -> [(ClientProxy, FitIns)]
        → roost's transport delivers each instruction; every result is validated →
    aggregate_fit(round, [(ClientProxy, FitRes)], failures) -> (Parameters | None, metrics)

and the same for evaluation; `initialize_parameters` and `evaluate` are the loop's starting model
and centralized evaluation. Failures reach `aggregate_*` as `ClientFailure` exceptions naming the
client and the reason. The strategy's own attributes are its business; what the round loop
checkpoints is the state tree (`init`), which the built-in strategies fill (see `builtin`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from roost.compat.flwr.legacy import (
    OK,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    HeldParameters,
    Parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.server.client_manager import ClientManager, SimpleClientManager
from roost.compat.flwr.server.client_proxy import ClientProxy
from roost.core.types import ClientId, Failure, Metrics, Scalar
from roost.core.types import EvaluateIns as RoostEvaluateIns
from roost.core.types import EvaluateRes as RoostEvaluateRes
from roost.core.types import FitIns as RoostFitIns
from roost.core.types import FitRes as RoostFitRes
from roost.core.types import Parameters as Arrays
from roost.errors import ConfigurationError
from roost.strategy.base import FitAggregate, RoundContext, State
from roost.strategy.strategy import Strategy as RoostStrategy

FitFailures = list[tuple[ClientProxy, FitRes] | BaseException]
EvaluateFailures = list[tuple[ClientProxy, EvaluateRes] | BaseException]


class ClientFailure(Exception):
    """A client of the round that sent no usable result (it raised, timed out, disconnected, or
    its result failed validation): what `aggregate_fit` / `aggregate_evaluate` get in `failures`.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"client {failure.client_id}: {failure.reason}")
        self.failure = failure
        self.client = ClientProxy(failure.client_id)


class ClassicRound:
    """One round as a classic strategy's steps see it: the model as `Parameters`, the client
    manager, and the state tree the built-in steps advance (roost's side of the round)."""

    def __init__(self, context: RoundContext, parameters: Arrays, state: State) -> None:
        self.context = context
        self.parameters = parameters
        self.flower_parameters = HeldParameters(parameters)
        self.state = state
        self.measurements: dict[str, float] = {}
        self.ids: dict[str, ClientId] = {}

    @property
    def rng(self) -> Any:
        return self.context.rng

    def client_manager(self, minimum: int) -> SimpleClientManager:
        """The round's available clients (at least `minimum`), sampled with the loop's rng."""
        manager = SimpleClientManager(rng=self.context.rng, waiter=self._available)
        manager.wait_for(minimum)
        return manager

    def _available(self, count: int) -> list[ClientId]:
        client_ids = self.context.available(count)
        self.ids.update((str(client_id), client_id) for client_id in client_ids)
        return client_ids

    def arrays_of(self, parameters: Parameters) -> Arrays:
        """The arrays of `parameters` (the round's model itself when it is the one sent)."""
        if parameters is self.flower_parameters:
            return self.parameters
        if not isinstance(parameters, Parameters):
            raise ConfigurationError(
                f"a classic strategy's instructions carry Parameters, got "
                f"{type(parameters).__name__}; use ndarrays_to_parameters(arrays)"
            )
        return parameters_to_ndarrays(parameters)

    def client_id(self, client: ClientProxy) -> ClientId:
        """roost's id of `client` (a proxy the manager handed out, or one made from an id)."""
        if not isinstance(client, ClientProxy):
            raise ConfigurationError(
                f"configure_fit / configure_evaluate return (ClientProxy, instruction) pairs; "
                f"got {type(client).__name__} where the ClientProxy goes"
            )
        return self.ids.get(client.cid, client.cid)

    def cohort(self, pairs: Any, kind: type) -> list[tuple[ClientId, Any]]:
        """roost's cohort for `pairs` of `(ClientProxy, FitIns | EvaluateIns)`; instructions
        that are one object stay one (transports encode each once)."""
        made: dict[int, Any] = {}
        cohort = []
        for client, instruction in pairs or []:
            flower_kind = FitIns if kind is RoostFitIns else EvaluateIns
            if not isinstance(instruction, flower_kind):
                raise ConfigurationError(
                    f"configure_{'fit' if kind is RoostFitIns else 'evaluate'} must pair each "
                    f"client with a {flower_kind.__name__}, got {type(instruction).__name__}"
                )
            if id(instruction) not in made:
                arrays = self.arrays_of(instruction.parameters)
                made[id(instruction)] = kind(arrays, dict(instruction.config))
            cohort.append((self.client_id(client), made[id(instruction)]))
        return cohort


def flower_fit_res(result: RoostFitRes) -> FitRes:
    return FitRes(OK, HeldParameters(result.parameters), result.num_examples, dict(result.metrics))


def flower_evaluate_res(result: RoostEvaluateRes) -> EvaluateRes:
    return EvaluateRes(OK, result.loss, result.num_examples, dict(result.metrics))


class Strategy(RoostStrategy, ABC):
    """Flower's abstract classic strategy: implement its six methods (Flower's signatures).

    roost's round loop runs it: it validates every result before `aggregate_fit` /
    `aggregate_evaluate` see it, samples with the run's seeded generator (through the
    `ClientManager` it hands `configure_*`), and checkpoints the state tree of `init` (empty for a
    strategy written from scratch: attributes you set on `self` are not in a checkpoint).
    """

    # What the round loop reads of a roost strategy, for a subclass that sets none of it.
    min_available_clients: int = 1
    secure_aggregation = None
    _round: ClassicRound | None = None

    def __init__(self) -> None:
        """Flower's `Strategy` takes no arguments."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- Flower's interface ----------------------------------------------------------------

    @abstractmethod
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The starting global model (None: roost asks one client for it)."""

    @abstractmethod
    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Which clients train this round, and what each one is sent."""

    @abstractmethod
    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: FitFailures,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """The next global model (None: unchanged) and the round's training metrics."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Which clients evaluate the model this round, and what each one is sent."""

    @abstractmethod
    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: EvaluateFailures,
    ) -> tuple[float | None, dict[str, Scalar]]:
        """The round's distributed loss (None: none) and evaluation metrics."""

    @abstractmethod
    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Centralized evaluation of `parameters` on the server (None: none)."""

    # -- what roost's round loop calls -----------------------------------------------------

    def initial_model(self) -> Arrays | None:
        parameters = self.initialize_parameters(SimpleClientManager())
        return None if parameters is None else parameters_to_ndarrays(parameters)

    def centralized_evaluation(
        self, server_round: int, parameters: Arrays
    ) -> tuple[float, Metrics] | None:
        outcome = self.evaluate(server_round, HeldParameters(parameters))
        if outcome is None:
            return None
        loss, metrics = outcome
        return float(loss), dict(metrics)

    def init(self, parameters: Arrays) -> dict[str, State]:
        return {"strategy": type(self).__name__}

    def fit_round(self, context: RoundContext, parameters: Arrays, state: State) -> FitAggregate:
        """One training round through `configure_fit` and `aggregate_fit`."""
        self._round = current = ClassicRound(context, parameters, state)
        try:
            server_round = context.server_round
            manager = current.client_manager(self.min_available_clients)
            pairs = self.configure_fit(server_round, current.flower_parameters, manager)
            cohort = current.cohort(pairs, RoostFitIns)
            if not cohort:
                return FitAggregate(None, {}, current.state, {})
            results: list[tuple[ClientProxy, FitRes]] = []
            failures: FitFailures = []
            for client_id, outcome in context.exchange("fit", cohort, parameters):
                if isinstance(outcome, Failure):
                    failures.append(ClientFailure(outcome))
                else:
                    results.append((ClientProxy(client_id), flower_fit_res(outcome)))
            new, metrics = self.aggregate_fit(server_round, results, failures)
            arrays = None if new is None else current.arrays_of(new)
            return FitAggregate(arrays, dict(metrics or {}), current.state, current.measurements)
        finally:
            self._round = None

    def evaluate_round(
        self, context: RoundContext, parameters: Arrays, state: State
    ) -> tuple[float | None, Metrics]:
        """One evaluation round through `configure_evaluate` and `aggregate_evaluate`."""
        self._round = current = ClassicRound(context, parameters, state)
        try:
            server_round = context.server_round
            manager = current.client_manager(self.min_available_clients)
            pairs = self.configure_evaluate(server_round, current.flower_parameters, manager)
            cohort = current.cohort(pairs, RoostEvaluateIns)
            if not cohort:
                return None, {}
            results: list[tuple[ClientProxy, EvaluateRes]] = []
            failures: EvaluateFailures = []
            for client_id, outcome in context.exchange("evaluate", cohort, parameters):
                if isinstance(outcome, Failure):
                    failures.append(ClientFailure(outcome))
                else:
                    results.append((ClientProxy(client_id), flower_evaluate_res(outcome)))
            loss, metrics = self.aggregate_evaluate(server_round, results, failures)
            return (None if loss is None else float(loss)), dict(metrics or {})
        finally:
            self._round = None

    def current_round(self, step: str) -> ClassicRound:
        """The round a built-in step is part of; a clear error outside one."""
        if self._round is None:
            raise ConfigurationError(
                f"{type(self).__name__}.{step} runs inside a round of roost's loop "
                "(run_simulation, start_simulation or start_server), not on its own"
            )
        return self._round


__all__ = ["ClientFailure", "Strategy"]
