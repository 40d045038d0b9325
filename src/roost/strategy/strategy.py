"""A strategy = client selection + weighting + update transforms + aggregator + server optimizer.

`Strategy` is the one composable implementation the round loop drives; named strategies such as
`FedAvg` are presets of its parts. To change one behaviour, pass a different part; to change the
protocol itself, subclass and override a method (the loop calls only the methods documented here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from roost.core.types import (
    ClientId,
    Config,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    Metrics,
    Outcome,
    Parameters,
)
from roost.core.validation import check_parameters
from roost.errors import ConfigurationError, InvalidMessageError
from roost.strategy.aggregators import (
    Aggregator,
    NotEnoughUpdatesError,
    WeightedMean,
    min_updates,
)
from roost.strategy.optimizers import OptimizerState, ServerOptimizer, ServerSGD, subtract
from roost.strategy.weighting import WeightFn, weight_by_num_examples

log = logging.getLogger(__name__)

MetricsAggregationFn = Callable[[list[tuple[int, Metrics]]], Metrics]
ConfigFn = Callable[[int], Config]
EvaluateFn = Callable[[int, Parameters, Config], "tuple[float, Metrics] | None"]
UpdateFn = Callable[[Parameters, Parameters], Parameters]


class UpdateTransform(Protocol):
    """Rewrites one client's update (for example clipping) before it is aggregated.

    A transform that learns across rounds may also define `end_round(server_round)`,
    `state_dict()` and `load_state_dict(state)`; see `roost.strategy.transforms`.
    """

    def __call__(
        self, update: Parameters, client_id: ClientId, server_round: int
    ) -> Parameters: ...


def parameter_delta(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns trained parameters: result − global."""
    return subtract(result, global_parameters)


def negative_gradient(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns a gradient (FedSGD): −gradient, a descent direction."""
    return [np.negative(gradient) for gradient in result]


def sample_uniformly(
    client_ids: Sequence[ClientId], count: int, rng: np.random.Generator
) -> list[ClientId]:
    """`count` distinct clients drawn uniformly, returned in the order of `client_ids`."""
    chosen = np.sort(rng.choice(len(client_ids), size=count, replace=False))
    return [client_ids[index] for index in chosen]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")


class Strategy:
    """The composable federated strategy.

    Args:
        fraction_fit: share of available clients sampled for training each round.
        fraction_evaluate: share sampled for distributed evaluation (0 disables it).
        min_fit_clients: never train with fewer clients than this.
        min_evaluate_clients: never evaluate with fewer clients than this.
        min_available_clients: wait for this many connected clients before a round starts.
        initial_parameters: the starting global model; when None, one random client is asked.
        evaluate_fn: centralized evaluation `(server_round, parameters, config) -> (loss, metrics)`,
            run on the server before round 1 (as round 0) and after every round.
        on_fit_config_fn / on_evaluate_config_fn: `server_round -> config` sent to clients.
        fit_metrics_aggregation_fn / evaluate_metrics_aggregation_fn: receive
            `[(num_examples, metrics), ...]` of the round's clients and return aggregated metrics.
        accept_failures: when False, any failed client leaves the global model unchanged that round.
        aggregator: how the cohort's updates are combined (default: weighted mean, streaming).
        weight_fn: `(client_id, num_examples, metrics) -> weight` (default: num_examples).
        server_optimizer: turns the pseudo-gradient into the next model (default: plain replace).
        update_transforms: applied, in order, to each client's update before aggregation.
        sample_fn: `(client_ids, count, rng) -> chosen ids` (default: uniform without replacement).
        update_fn: `(client result parameters, global parameters) -> update`; the default,
            `parameter_delta`, is result − global; `negative_gradient` is for clients that
            return gradients (FedSGD).
    """

    def __init__(
        self,
        *,
        fraction_fit: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_fit_clients: int = 2,
        min_evaluate_clients: int = 2,
        min_available_clients: int = 2,
        initial_parameters: Parameters | None = None,
        evaluate_fn: EvaluateFn | None = None,
        on_fit_config_fn: ConfigFn | None = None,
        on_evaluate_config_fn: ConfigFn | None = None,
        fit_metrics_aggregation_fn: MetricsAggregationFn | None = None,
        evaluate_metrics_aggregation_fn: MetricsAggregationFn | None = None,
        accept_failures: bool = True,
        aggregator: Aggregator | None = None,
        weight_fn: WeightFn = weight_by_num_examples,
        server_optimizer: ServerOptimizer | None = None,
        update_transforms: Sequence[UpdateTransform] = (),
        sample_fn: Callable[[Sequence[ClientId], int, np.random.Generator], list[ClientId]] = (
            sample_uniformly
        ),
        update_fn: UpdateFn = parameter_delta,
    ) -> None:
        _check_fraction("fraction_fit", fraction_fit)
        _check_fraction("fraction_evaluate", fraction_evaluate)
        _check_count("min_fit_clients", min_fit_clients, 1)
        _check_count("min_evaluate_clients", min_evaluate_clients, 0)
        _check_count("min_available_clients", min_available_clients, 1)
        if fraction_fit == 0:
            raise ConfigurationError("fraction_fit must be > 0: a round needs clients to train")
        self.fraction_fit = fraction_fit
        self.fraction_evaluate = fraction_evaluate
        self.min_fit_clients = min_fit_clients
        self.min_evaluate_clients = min_evaluate_clients
        self.min_available_clients = min_available_clients
        self.initial_parameters = (
            None if initial_parameters is None else check_parameters(initial_parameters)
        )
        self.evaluate_fn = evaluate_fn
        self.on_fit_config_fn = on_fit_config_fn
        self.on_evaluate_config_fn = on_evaluate_config_fn
        self.fit_metrics_aggregation_fn = fit_metrics_aggregation_fn
        self.evaluate_metrics_aggregation_fn = evaluate_metrics_aggregation_fn
        self.accept_failures = accept_failures
        self.aggregator: Aggregator = aggregator or WeightedMean()
        self.weight_fn = weight_fn
        self.server_optimizer: ServerOptimizer = server_optimizer or ServerSGD()
        self.update_transforms = tuple(update_transforms)
        self.sample_fn = sample_fn
        self.update_fn = update_fn
        self._optimizer_state: OptimizerState | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fraction_fit={self.fraction_fit}, "
            f"fraction_evaluate={self.fraction_evaluate}, aggregator={self.aggregator!r}, "
            f"server_optimizer={self.server_optimizer!r}, accept_failures={self.accept_failures})"
        )

    # -- what the round loop calls -------------------------------------------------------------

    def initialize_parameters(self) -> Parameters | None:
        """The starting global model, or None to let the loop ask one client."""
        return self.initial_parameters

    def num_fit_clients(self, num_available: int) -> int:
        """How many clients to sample for training out of `num_available`."""
        return max(int(num_available * self.fraction_fit + 1e-9), self.min_fit_clients)

    def num_evaluate_clients(self, num_available: int) -> int:
        """How many clients to sample for evaluation (0: skip distributed evaluation)."""
        if self.fraction_evaluate == 0:
            return 0
        return max(int(num_available * self.fraction_evaluate + 1e-9), self.min_evaluate_clients)

    def configure_fit(
        self,
        server_round: int,
        parameters: Parameters,
        client_ids: Sequence[ClientId],
        rng: np.random.Generator,
    ) -> list[tuple[ClientId, FitIns]]:
        """Choose the round's training cohort and what each member receives."""
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        count = min(self.num_fit_clients(len(client_ids)), len(client_ids))
        chosen = self.sample_fn(client_ids, count, rng)
        needed = min_updates(self.aggregator)
        if len(chosen) < needed:
            raise ConfigurationError(
                f"{self.aggregator!r} needs at least {needed} updates per round but this round "
                f"samples {len(chosen)} of {len(client_ids)} clients; raise min_fit_clients and "
                "min_available_clients (or fraction_fit), or lower num_malicious_clients"
            )
        instruction = FitIns(parameters, dict(config))
        return [(client_id, instruction) for client_id in chosen]

    def aggregate_fit(
        self, server_round: int, parameters: Parameters, outcomes: Iterable[Outcome]
    ) -> tuple[Parameters | None, Metrics]:
        """Consume the cohort's outcomes as they stream in; return the next model (or None).

        This is also the way to run a strategy's aggregation directly, outside any loop, for
        testing and research::

            new_parameters, metrics = strategy.aggregate_fit(
                server_round, global_parameters,
                [("0", FitRes(params_0, 120, {})), ("1", FitRes(params_1, 80, {}))],
            )

        Each result is checked against `parameters` (arrays, shapes, dtypes, finite values) and
        weighted with `weight_fn`; a result that fails either is left out with a warning and
        counts as a failure. Returns `(None, {})`, leaving the model unchanged, when nothing usable
        arrived, when a failure occurred and `accept_failures` is False, or when a robust
        aggregator got fewer updates than it needs (logged). The server optimizer's state
        advances only when a new model is returned.
        """
        accumulator = self.aggregator.start(parameters)
        fit_metrics: list[tuple[int, Metrics]] = []
        failures = 0
        try:
            for client_id, result in outcomes:
                if isinstance(result, Failure):
                    failures += 1
                    continue
                try:
                    update, weight = self._prepare_update(
                        server_round, parameters, client_id, result
                    )
                except InvalidMessageError as error:
                    log.warning(
                        "fit_round %d: client %s left out: %s", server_round, client_id, error
                    )
                    failures += 1
                    continue
                accumulator.add(update, weight)
                fit_metrics.append((result.num_examples, result.metrics))
                # Let this client's arrays go before the next result arrives (O(model) memory).
                del update, result
        finally:
            self._end_round(server_round)
        if failures and not self.accept_failures:
            log.warning(
                "fit_round %d: %d failure(s) and accept_failures=False: global model unchanged",
                server_round,
                failures,
            )
            return None, {}
        try:
            delta = accumulator.result()
        except NotEnoughUpdatesError as error:
            log.warning("fit_round %d: %s: global model unchanged", server_round, error)
            return None, {}
        del accumulator  # frees the running sums (or buffered updates) before the server step
        if delta is None:
            log.warning(
                "fit_round %d: no result with positive weight: global model unchanged", server_round
            )
            return None, {}
        if self._optimizer_state is None:
            self._optimizer_state = self.server_optimizer.init(parameters)
        new_parameters, self._optimizer_state = self.server_optimizer.apply(
            parameters, delta, self._optimizer_state
        )
        return new_parameters, self._aggregate_metrics(self.fit_metrics_aggregation_fn, fit_metrics)

    def _prepare_update(
        self, server_round: int, parameters: Parameters, client_id: ClientId, result: object
    ) -> tuple[Parameters, float]:
        """Check one result, compute its weight and its transformed update."""
        if not isinstance(result, FitRes):
            raise InvalidMessageError(f"expected a FitRes, got {type(result).__name__}")
        client_parameters = check_parameters(result.parameters, parameters)
        try:
            weight = self.weight_fn(client_id, result.num_examples, result.metrics)
        except InvalidMessageError:
            raise
        except Exception as error:  # a weighting that cannot handle this client drops it only
            raise InvalidMessageError(
                f"weight_fn raised {type(error).__name__}: {error}"
            ) from error
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
            raise InvalidMessageError(f"weight_fn returned {weight!r}, not a number")
        weight = float(weight)
        if not (np.isfinite(weight) and weight >= 0):
            raise InvalidMessageError(f"weight_fn returned {weight}; weights must be finite, >= 0")
        update = self.update_fn(client_parameters, parameters)
        for transform in self.update_transforms:
            update = transform(update, client_id, server_round)
        return update, weight

    def _end_round(self, server_round: int) -> None:
        for transform in self.update_transforms:
            end_round = getattr(transform, "end_round", None)
            if end_round is not None:
                end_round(server_round)

    def configure_evaluate(
        self,
        server_round: int,
        parameters: Parameters,
        client_ids: Sequence[ClientId],
        rng: np.random.Generator,
    ) -> list[tuple[ClientId, EvaluateIns]]:
        """Choose the round's evaluation cohort (empty when fraction_evaluate is 0)."""
        count = min(self.num_evaluate_clients(len(client_ids)), len(client_ids))
        if count == 0:
            return []
        config = self.on_evaluate_config_fn(server_round) if self.on_evaluate_config_fn else {}
        chosen = self.sample_fn(client_ids, count, rng)
        instruction = EvaluateIns(parameters, dict(config))
        return [(client_id, instruction) for client_id in chosen]

    def aggregate_evaluate(
        self, server_round: int, outcomes: Iterable[Outcome]
    ) -> tuple[float | None, Metrics]:
        """The example-weighted mean of client losses, and the aggregated metrics."""
        loss_sum = 0.0
        total = 0
        eval_metrics: list[tuple[int, Metrics]] = []
        failures = 0
        for _, result in outcomes:
            if isinstance(result, Failure):
                failures += 1
                continue
            assert isinstance(result, EvaluateRes)
            loss_sum += result.num_examples * result.loss
            total += result.num_examples
            eval_metrics.append((result.num_examples, result.metrics))
        if (failures and not self.accept_failures) or total == 0:
            return None, {}
        metrics = self._aggregate_metrics(self.evaluate_metrics_aggregation_fn, eval_metrics)
        return loss_sum / total, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, Metrics] | None:
        """Centralized evaluation with `evaluate_fn`, or None without one."""
        if self.evaluate_fn is None:
            return None
        outcome = self.evaluate_fn(server_round, parameters, {})
        if outcome is None:
            return None
        loss, metrics = outcome
        return float(loss), dict(metrics)

    def state_dict(self) -> dict[str, Any]:
        """What the strategy must remember across rounds, for checkpoints.

        Nested dicts and lists of NumPy arrays and Python scalars only: `"transforms"` (one dict
        per update transform, empty for stateless ones; the adaptive clipping bound lives here)
        and `"optimizer"` (the server optimizer's state, once it has one). Nothing in it is
        changed in place later, so a saved state stays valid.
        """
        state: dict[str, Any] = {
            "transforms": [
                dict(transform.state_dict()) if hasattr(transform, "state_dict") else {}
                for transform in self.update_transforms
            ]
        }
        if self._optimizer_state is not None:
            state["optimizer"] = self._optimizer_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the strategy then continues exactly from there."""
        self._optimizer_state = state.get("optimizer")
        transforms = state.get("transforms")
        if transforms is None:
            return
        if len(transforms) != len(self.update_transforms):
            raise ConfigurationError(
                f"the saved state has {len(transforms)} update transform(s), this strategy has "
                f"{len(self.update_transforms)}; restore into a strategy built the same way"
            )
        for transform, transform_state in zip(self.update_transforms, transforms, strict=True):
            if hasattr(transform, "load_state_dict"):
                transform.load_state_dict(transform_state)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _aggregate_metrics(
        function: MetricsAggregationFn | None, pairs: list[tuple[int, Metrics]]
    ) -> Metrics:
        if function is None or not pairs:
            return {}
        return dict(function(pairs))
