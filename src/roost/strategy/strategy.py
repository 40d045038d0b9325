"""A strategy = client sampler + weighting + update transforms + aggregator + server optimizer.

`Strategy` is the one composable implementation the round loop drives; named strategies such as
`FedAvg` are presets of its parts. It holds settings only: everything that changes from round to
round lives in the state tree `init` returns, which every step takes and gives back (see
`roost.strategy.base`). A round is a sequence of phases, run through the loop's `RoundContext`;
a strategy with more phases (`FedSGD(line_search_steps=...)`) overrides `fit_round`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, TypeVar

import numpy as np

from roost.core.checks import check_count, check_fraction
from roost.core.codecs import Codec
from roost.core.types import (
    ClientId,
    Config,
    EvaluateIns,
    FitIns,
    Metrics,
    Outcome,
    Parameters,
)
from roost.core.validation import check_parameters
from roost.errors import ConfigurationError
from roost.strategy.aggregators import WeightedMean
from roost.strategy.base import (
    NO_STATE,
    Aggregator,
    Chain,
    FitAggregate,
    FunctionSampler,
    FunctionWeighting,
    PartialFit,
    RoundContext,
    Sampler,
    ServerOptimizer,
    State,
    UpdateTransform,
    Weighting,
    chain,
    sample_uniformly,
)
from roost.strategy.compression import CompressionSpec, as_codec, check_compression, compressed_fit
from roost.strategy.optimizers import ServerSGD, UpdateFn, parameter_delta
from roost.strategy.secure import SecureAggregation
from roost.strategy.tally import FitSteps, aggregate_metrics, aggregate_outcomes, mean_evaluation
from roost.strategy.weighting import WeightFn, weight_by_num_examples

log = logging.getLogger(__name__)

MetricsAggregationFn = Callable[[list[tuple[int, Metrics]]], Metrics]
ConfigFn = Callable[[int], Config]
EvaluateFn = Callable[[int, Parameters, Config], "tuple[float, Metrics] | None"]
SampleFn = Callable[[Sequence[ClientId], int, np.random.Generator], list[ClientId]]
InsT = TypeVar("InsT", FitIns, EvaluateIns)


_REPLACEABLE = (
    *("fraction_fit", "fraction_evaluate", "min_fit_clients", "min_evaluate_clients"),
    *("min_available_clients", "evaluate_fn", "on_fit_config_fn", "on_evaluate_config_fn"),
    *("fit_metrics_aggregation_fn", "evaluate_metrics_aggregation_fn", "accept_failures"),
)
"""The knobs `Strategy.replace` changes: those kept as given, with no part built from them."""


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
        weight_fn: a `Weighting`, or a plain `(client_id, num_examples, metrics) -> weight`
            function (default: num_examples); kept as a `Weighting` (a function is wrapped in
            `FunctionWeighting`).
        server_optimizer: turns the pseudo-gradient into the next model (default: plain replace).
        update_transforms: applied, in order, to each client's update before aggregation; kept
            as one `Chain` of them (see `roost.strategy.chain`).
        sampler: a `Sampler`, or a plain `(client_ids, count, rng) -> chosen ids` function
            (default: uniform without replacement).
        update_fn: `(client result parameters, global parameters) -> update`; the default,
            `parameter_delta`, is result − global; `negative_gradient` is for clients that
            return gradients (FedSGD).
        secure_aggregation: run each fit round with SecAgg+ so the server learns only the
            cohort's sums (`roost.strategy.secure`); None: updates in the clear.
        fit_config_defaults: entries added to every fit config (what `on_fit_config_fn` sends
            wins); presets add their own (FedProx's μ).
        compression: clients send updates compressed by this codec ("q8", "rot-q4", "topk:0.01",
            a `Codec`; see `roost.strategy.compression`), None: uncompressed; each round then
            records its fit phase's `bytes_up` and `bytes_down` in `History.measurements`.
    """

    compression: Codec | None = None  # a strategy written without __init__ compresses nothing
    needs_clock: bool = False  # keeps time (FedBuff): a simulated clock, or real time (gRPC)

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
        weight_fn: Weighting | WeightFn = weight_by_num_examples,
        server_optimizer: ServerOptimizer | None = None,
        update_transforms: Sequence[UpdateTransform] = (),
        sampler: Sampler | SampleFn = sample_uniformly,
        update_fn: UpdateFn = parameter_delta,
        secure_aggregation: SecureAggregation | None = None,
        fit_config_defaults: Config | None = None,
        compression: CompressionSpec | None = None,
    ) -> None:
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
        # One attribute per part, named as its argument; a plain function becomes the part.
        self.weight_fn: Weighting = (
            weight_fn if isinstance(weight_fn, Weighting) else FunctionWeighting(weight_fn)
        )
        self.server_optimizer: ServerOptimizer = server_optimizer or ServerSGD()
        self.update_transforms: Chain = chain(*update_transforms)
        self.sampler: Sampler = (
            sampler if isinstance(sampler, Sampler) else FunctionSampler(sampler)
        )
        self.update_fn = update_fn
        self.secure_aggregation = secure_aggregation
        # Entries a preset adds to every fit config (FedProx's μ, FedAdam's client learning rate);
        # what on_fit_config_fn sends wins, so a preset default never overrides the user's choice.
        self.fit_config_defaults: Config = dict(fit_config_defaults or {})
        self.compression = as_codec(compression)
        self._check()

    def _check(self) -> None:
        """Refuse knobs and parts that cannot work together (the constructor's and `replace`'s
        checks)."""
        check_fraction("fraction_fit", self.fraction_fit)
        check_fraction("fraction_evaluate", self.fraction_evaluate)
        check_count("min_fit_clients", self.min_fit_clients, 1)
        check_count("min_evaluate_clients", self.min_evaluate_clients, 0)
        check_count("min_available_clients", self.min_available_clients, 1)
        if self.fraction_fit == 0:
            raise ConfigurationError("fraction_fit must be > 0: a round needs clients to train")
        if self.withholds_client_statistics and not self.accept_failures:
            raise ConfigurationError(
                "accept_failures=False keeps the model unchanged when a sampled client fails, "
                "which reveals who took part under central DP; keep accept_failures=True"
            )
        if self.secure_aggregation is not None:
            if self.update_fn is not parameter_delta:
                raise ConfigurationError(
                    "secure aggregation sums trained models' updates; clients that return "
                    "gradients (FedSGD) are not supported with it"
                )
            self.secure_aggregation.check(self)
        if self.compression is not None:
            check_compression(self)

    def replace(self, **changes: Any) -> Self:
        """A copy of this strategy with `changes` to its knobs (`min_available_clients`, ...),
        its `secure_aggregation` or its `compression`, checked as the constructor checks them.
        The strategy itself is not changed; parts are shared with the copy, which is fine: they
        keep settings only."""
        allowed = {*_REPLACEABLE, "secure_aggregation", "compression"}
        if unknown := sorted(set(changes) - allowed):
            raise ConfigurationError(
                f"replace() changes knobs, secure_aggregation and compression only, not "
                f"{', '.join(unknown)}; build a new strategy for other parts"
            )
        changed = copy.copy(self)
        vars(changed).update(changes)
        changed.compression = as_codec(changed.compression)
        changed._check()
        return changed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fraction_fit={self.fraction_fit}, "
            f"fraction_evaluate={self.fraction_evaluate}, aggregator={self.aggregator!r}, "
            f"server_optimizer={self.server_optimizer!r}, accept_failures={self.accept_failures})"
        )

    @property
    def withholds_client_statistics(self) -> bool:
        """Central DP: no client metrics, counts, failures or distributed evaluation recorded (a
        strategy written from scratch, without `Strategy.__init__`, has no transforms)."""
        transforms: Chain = vars(self).get("update_transforms", chain())
        return transforms.withholds_client_statistics

    def initialize_parameters(self) -> Parameters | None:
        """The starting global model, or None to let the loop ask one client."""
        return self.initial_parameters

    def initial_model(self) -> Parameters | None:
        """The loop's starting model (None: ask a client); Flower's classic API converts here."""
        return self.initialize_parameters()

    def centralized_evaluation(self, server_round: int, parameters: Parameters) -> Any:
        """The round loop's centralized evaluation: `(loss, metrics)` or None."""
        return self.evaluate(server_round, parameters)

    def init(self, parameters: Parameters) -> dict[str, State]:
        """The state of every part before round 1, as one tree (named, so a resumed run can
        tell it was made by this kind of strategy); with `init_own_state`'s under "own"."""
        tree = {
            "strategy": type(self).__name__,
            "sampler": self.sampler.init(),
            "weighting": self.weight_fn.init(),
            "transforms": self.update_transforms.init(parameters),
            "aggregator": self.aggregator.init(parameters),
            "optimizer": self.server_optimizer.init(parameters),
        }
        own = self.init_own_state(parameters)  # without state of its own, the tree it had
        return tree if own is NO_STATE else {**tree, "own": own}

    def init_own_state(self, parameters: Parameters) -> State:
        """A subclass's own state before round 1 (default: none): `state["own"]` in every step,
        plain data (str-keyed dicts, lists, arrays, scalars), checkpointed, free to grow."""
        return NO_STATE

    # -- phases of a round ---------------------------------------------------------------------

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> FitAggregate:
        """The round's training: a sampled cohort, one fit phase (or secure aggregation's
        phases), aggregation, then `conclude_fit`."""
        state = {**state, "transforms": self.update_transforms.start_round(state["transforms"])}
        server_round = context.server_round
        available = context.available(max(self.min_available_clients, self.min_fit_clients))
        cohort, state = self.configure_fit(server_round, parameters, available, context.rng, state)
        if self.secure_aggregation is not None:
            partial = self.secure_aggregation.aggregate(self, context, cohort, parameters, state)
            if partial is None:
                return FitAggregate(None, {}, state, {})
            return self.conclude_fit(server_round, parameters, partial)
        if not cohort:
            # Still finish the round: a transform may release something for an empty cohort
            # (central DP under Poisson sampling adds its noise all the same).
            if not self.withholds_client_statistics:  # an empty cohort is a secret under DP
                log.info("fit_round %d: no clients selected", server_round)
            return self.conclude_fit(server_round, parameters, PartialFit(None, state))
        if self.compression is not None:
            return compressed_fit(self, context, cohort, parameters, state)
        outcomes = context.exchange("fit", cohort, parameters)
        return self.aggregate_fit(server_round, parameters, outcomes, state)

    def evaluate_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> tuple[float | None, Metrics]:
        """The round's distributed evaluation: one evaluate phase (skipped at fraction 0)."""
        if self.fraction_evaluate == 0:
            return None, {}
        available = context.available(max(self.min_available_clients, self.min_evaluate_clients))
        cohort, _ = self.configure_evaluate(
            context.server_round, parameters, available, context.rng, state
        )
        if not cohort:
            return None, {}
        outcomes = context.exchange("evaluate", cohort, parameters)
        return self.aggregate_evaluate(context.server_round, outcomes)

    # -- steps ---------------------------------------------------------------------------------

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
        state: dict[str, State] | None = None,
    ) -> tuple[list[tuple[ClientId, FitIns]], dict[str, State]]:
        """Choose the round's training cohort and what each member receives (and the next state)."""
        state = self.init(parameters) if state is None else state
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        count = min(self.num_fit_clients(len(client_ids)), len(client_ids))
        instruction = FitIns(parameters, {**self.fit_config_defaults, **config})
        cohort, state = self._sample_cohort(client_ids, count, rng, state, instruction)
        needed = self.aggregator.min_updates
        if len(cohort) < needed:
            raise ConfigurationError(
                f"{self.aggregator!r} needs at least {needed} updates per round but this round "
                f"samples {len(cohort)} of {len(client_ids)} clients; raise min_fit_clients and "
                "min_available_clients (or fraction_fit), or lower num_malicious_clients"
            )
        return cohort, state

    def aggregate_fit(
        self,
        server_round: int,
        parameters: Parameters,
        outcomes: Iterable[Outcome],
        state: dict[str, State] | None = None,
    ) -> FitAggregate:
        """Consume the cohort's outcomes as they stream in; return the next model (or None).

        Results must already be validated against `parameters` (the round loop does that at its
        boundary). This is also the way to run a strategy's aggregation directly, for tests and
        research (`state` defaults to `init(parameters)`):

            new_parameters, metrics, state, measurements = strategy.aggregate_fit(
                server_round, global_parameters,
                [("0", FitRes(params_0, 120, {})), ("1", FitRes(params_1, 80, {}))],
            )

        A result whose weight cannot be computed is left out with a warning. The model stays
        unchanged (`parameters` None) when nothing usable arrived, when a failure occurred and
        `accept_failures` is False, or when a robust aggregator got fewer updates than it needs.
        """
        if state is None:
            state = self.init(parameters)
        steps = FitSteps(
            self.weight_fn, self.update_fn, self.update_transforms, server_round, parameters
        )
        partial = aggregate_outcomes(self.aggregator, steps, outcomes, state)
        return self.conclude_fit(server_round, parameters, partial)

    def conclude_fit(
        self, server_round: int, parameters: Parameters, partial: PartialFit
    ) -> FitAggregate:
        """The end of every fit round, however the aggregate was made: the transforms' `finish`,
        the failure rule, the server optimizer's step and the fit metrics."""
        state = partial.state
        aggregate, transforms_state, measured = self.update_transforms.finish(
            partial.aggregate, state["transforms"]
        )
        state = {**state, "transforms": transforms_state}
        if self.withholds_client_statistics:
            # Only the DP transform's own measurements are released; the aggregation's and the
            # clients' metrics are un-noised client statistics.
            measurements = measured
            partial = PartialFit(partial.aggregate, state, failures=partial.failures)
        else:
            measurements = {**partial.measurements, **measured}
        if partial.failures and not self.accept_failures:
            log.warning(
                "fit_round %d: %d failure(s) and accept_failures=False: global model unchanged",
                server_round,
                partial.failures,
            )
            return FitAggregate(None, {}, state, measurements)
        if aggregate is None:
            log.warning(
                "fit_round %d: no result with positive weight: global model unchanged", server_round
            )
            return FitAggregate(None, {}, state, measurements)
        optimizer_state = self.server_optimizer.at_round(state["optimizer"], server_round)
        new_parameters, optimizer_state = self.server_optimizer.apply(
            parameters, aggregate, optimizer_state
        )
        metrics = aggregate_metrics(self.fit_metrics_aggregation_fn, partial.fit_metrics)
        return FitAggregate(
            new_parameters, metrics, {**state, "optimizer": optimizer_state}, measurements
        )

    def configure_evaluate(
        self,
        server_round: int,
        parameters: Parameters,
        client_ids: Sequence[ClientId],
        rng: np.random.Generator,
        state: dict[str, State] | None = None,
    ) -> tuple[list[tuple[ClientId, EvaluateIns]], dict[str, State]]:
        """Choose the round's evaluation cohort (empty when fraction_evaluate is 0)."""
        state = self.init(parameters) if state is None else state
        count = min(self.num_evaluate_clients(len(client_ids)), len(client_ids))
        if count == 0:
            return [], state
        config = self.on_evaluate_config_fn(server_round) if self.on_evaluate_config_fn else {}
        instruction = EvaluateIns(parameters, dict(config))
        return self._sample_cohort(client_ids, count, rng, state, instruction)

    def _sample_cohort(
        self,
        client_ids: Sequence[ClientId],
        count: int,
        rng: np.random.Generator,
        state: dict[str, State],
        instruction: InsT,
    ) -> tuple[list[tuple[ClientId, InsT]], dict[str, State]]:
        """The sampler's choice of `count` of `client_ids`, each given `instruction`, and the
        state with the sampler's next state."""
        chosen, sampler_state = self.sampler.sample(client_ids, count, rng, state["sampler"])
        cohort = [(client_id, instruction) for client_id in chosen]
        return cohort, {**state, "sampler": sampler_state}

    def aggregate_evaluate(
        self, server_round: int, outcomes: Iterable[Outcome]
    ) -> tuple[float | None, Metrics]:
        """The example-weighted mean of client losses, and the aggregated metrics."""
        return mean_evaluation(outcomes, self.accept_failures, self.evaluate_metrics_aggregation_fn)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, Metrics] | None:
        """Centralized evaluation with `evaluate_fn`, or None without one."""
        if self.evaluate_fn is None:
            return None
        outcome = self.evaluate_fn(server_round, parameters, {})
        if outcome is None:
            return None
        loss, metrics = outcome
        return float(loss), dict(metrics)
