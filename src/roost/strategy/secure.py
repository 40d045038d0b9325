"""Secure aggregation (SecAgg+) as a plan of phases: the server learns only the sum.

`Strategy(secure_aggregation=SecureAggregation(...))` replaces the round's single fit phase with
the four phases of `PLAN`, over the same transport: "secagg_advertise_keys", "secagg_share_keys",
"fit" (the clients train and return their masked, quantized (w·update, w)) and "secagg_unmask".
Clients need nothing extra: every engine but the vectorized one and the gRPC client answer these
phases (`roost.client.secure_aggregation`). After unmasking, the server divides the two sums into
the weighted mean update (a `PartialFit`); the strategy then concludes the round as any other:
its transforms finish (central DP adds its noise here) and its server optimizer steps. With
`roost.privacy.DistributedDP` among them, the clients add the noise before masking instead
(distributed DP, `roost.strategy.secure_noise`).

What it composes with: a mean aggregator (`WeightedMean`, `Mean`) weighted by `num_examples` or
uniformly, update transforms that clients can apply themselves (`ClipL2`, central DP with a fixed
bound), any server optimizer. Robust aggregators (median, Krum, …) need each update and are
refused. Clients' weights are capped at `max_weight` (so they fit the quantizer) and fit metrics
travel in the clear, each counted with weight 1 (the server never learns `num_examples`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from roost.core.types import (
    ClientId,
    Config,
    Failure,
    FitIns,
    Metrics,
    Parameters,
    PhaseIns,
    PhaseRes,
)
from roost.errors import ConfigurationError
from roost.strategy.aggregators import Mean, WeightedMean
from roost.strategy.base import (
    Aggregator,
    FunctionWeighting,
    PartialFit,
    RoundContext,
    State,
    UpdateTransform,
    Weighting,
)
from roost.strategy.secure_noise import NoisePlan, noise_member, noised
from roost.strategy.weighting import uniform_weight, weight_by_num_examples

if TYPE_CHECKING:  # the protocol's code (and `cryptography`) loads when a secure round runs
    from roost.secagg import SecAggParameters, SecAggServer, ThreatModel, WeightedQuantizer

log = logging.getLogger(__name__)

PROTOCOL = "secagg"
FIT_PREFIX = "fit/"  # must match roost.client.secure_aggregation
QUANT_PREFIX = "quant/"


class SecureParts(Protocol):
    """What secure aggregation needs of a strategy: the parts that say how updates combine.

    It reads them to refuse what it cannot do, to tell clients how to weigh and clip their own
    update, and to step the transforms' state; it never calls the strategy's steps.
    """

    @property
    def aggregator(self) -> Aggregator: ...

    @property
    def weight_fn(self) -> Weighting: ...

    @property
    def update_transforms(self) -> UpdateTransform: ...


@dataclass(frozen=True)
class SecureAggregation:
    """Settings of secure aggregation for a strategy.

    Args:
        clip_range: R: every coordinate of a client's update is clipped to [−R, R] before it is
            quantized; the quantization error of the mean grows with R (see
            `roost.secagg.WeightedQuantizer.mean_error_bound`).
        bits: k: arithmetic modulo 2^k; the server refuses cohorts so large that the sum could
            wrap. 32 keeps masked vectors at 4 bytes per value. Levels stop at 2^53 (float64's
            exact integers), so widths above 53 bits admit more clients, not finer levels.
        max_weight: weights (`num_examples`) above this count as `max_weight`; with uniform
            weights (`Mean`, central DP) every weight is 1 and the quantizer is sized for 1.
        threshold: t, shares needed to rebuild a secret; None: the smallest secure value for the
            cohort's communication graph (a strict majority of each client's share holders).
        degree: k neighbours per client; None: the smallest that survives 10 % random dropouts
            (the complete graph, plain SecAgg, for small cohorts).
        threat: choose degree and threshold for this `roost.secagg.ThreatModel` (fractions of
            dropouts and of clients colluding with the server, failure probability 2^-σ; Bell
            et al. 2020) instead; None keeps the defaults above, which assume no colluders.
    """

    clip_range: float = 1.0
    bits: int = 32
    max_weight: float = 10_000.0
    threshold: int | None = None
    degree: int | None = None
    threat: ThreatModel | None = None

    def __post_init__(self) -> None:
        if not self.clip_range > 0:
            raise ConfigurationError(f"clip_range must be > 0, got {self.clip_range}")
        if not isinstance(self.bits, int) or not 8 <= self.bits <= 62:
            raise ConfigurationError(f"bits must be an int in [8, 62], got {self.bits!r}")
        if not self.max_weight > 0:
            raise ConfigurationError(f"max_weight must be > 0, got {self.max_weight}")
        if self.threat is not None:
            from roost.secagg import ThreatModel

            if not isinstance(self.threat, ThreatModel):
                raise ConfigurationError(
                    f"threat must be a roost.secagg.ThreatModel, got {self.threat!r}"
                )
            if self.threshold is not None or self.degree is not None:
                raise ConfigurationError(
                    "give threat, or degree and threshold, not both: a ThreatModel chooses them"
                )

    def check(self, strategy: SecureParts) -> None:
        """Refuse a strategy whose aggregation needs to see each update."""
        if not isinstance(strategy.aggregator, WeightedMean | Mean):
            raise ConfigurationError(
                f"secure aggregation computes a mean; {strategy.aggregator!r} needs each update "
                "(use FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad or FedProx)"
            )
        if self._uniform(strategy) is None:
            raise ConfigurationError(
                "secure aggregation weighs clients by num_examples or uniformly; "
                f"{strategy.weight_fn!r} needs what the server cannot see"
            )
        if noise_member(strategy.update_transforms) is not None and not self._uniform(strategy):
            raise ConfigurationError(
                "distributed DP bounds each client's contribution, so it weighs clients "
                "uniformly: use aggregator=Mean() or weight_fn=uniform_weight"
            )

    @staticmethod
    def _uniform(strategy: SecureParts) -> bool | None:
        if isinstance(strategy.aggregator, Mean):
            return True
        weighting = strategy.weight_fn
        if isinstance(weighting, FunctionWeighting):
            if weighting.function is weight_by_num_examples:
                return False
            if weighting.function is uniform_weight:
                return True
        return None

    def graph(self, cohort_size: int) -> SecAggParameters:
        """The communication graph's degree and threshold for a cohort of `cohort_size`."""
        from roost.secagg import SecAggParameters, default_parameters

        if self.threat is not None:
            return self.threat.parameters(cohort_size)
        default = default_parameters(cohort_size)
        degree = default.degree if self.degree is None else self.degree
        if self.threshold is None and self.degree is None:
            return default
        threshold = self.threshold if self.threshold is not None else degree // 2 + 1
        parameters = SecAggParameters(degree, threshold)
        parameters.check(cohort_size)
        return parameters

    def describe(self, cohort_size: int) -> str:
        """One line: the graph, threshold and quantization a cohort of `cohort_size` gets, and
        what they guarantee."""
        graph = self.graph(cohort_size)
        k, t = graph.degree, graph.threshold
        kind = "SecAgg (complete graph)" if k == cohort_size - 1 else "SecAgg+"
        smallest = "the smallest secure value: a strict majority of each client's share holders"
        if self.threat is not None:
            chosen = f" ({self.threat.describe(cohort_size, graph)})"
        elif self.degree is None and self.threshold is None:
            chosen = (
                f" ({smallest}; k survives 10 % random dropouts except with probability 1e-6, "
                "no colluding clients assumed)"
            )
        else:
            chosen = f" ({smallest})" if self.threshold is None else ""
        colluders = 2 * t - k - 1
        hidden = (
            f"unless {colluders} of its {k} neighbours collude with the server"
            if colluders <= k
            else "even if all its neighbours collude with the server"
        )
        return (
            f"secure aggregation: {kind} over {cohort_size} clients a round, {k} neighbours each, "
            f"threshold {t}{chosen}; a client's input stays hidden {hidden}, and a round "
            f"completes while at most {k + 1 - t} of any client's {k + 1} share holders drop; "
            f"{self.bits}-bit arithmetic, coordinates clipped to ±{self.clip_range:g}"
        )

    def aggregate(
        self,
        strategy: SecureParts,
        context: RoundContext,
        cohort: Sequence[tuple[ClientId, FitIns]],
        parameters: Parameters,
        state: dict[str, State],
    ) -> PartialFit | None:
        """Run `PLAN`'s phases with the sampled `cohort`: the server sees only the cohort's sums.

        Returns the weighted mean update, for the strategy to conclude like any fit round, or
        None (the model stays unchanged, the transforms do not finish) when the cohort has
        fewer than 2 clients or the protocol aborted.
        """
        from roost.secagg import SecAggAbortedError, SecAggServer

        server_round = context.server_round
        transforms = strategy.update_transforms
        # Under central DP the cohort's size and failures are secret: the operator's DEBUG only.
        level = logging.DEBUG if transforms.withholds_client_statistics else logging.WARNING
        if len(cohort) < 2:
            log.log(level, "fit_round %d: secure aggregation needs 2 or more clients", server_round)
            return None
        client_side = transforms.client_side(state["transforms"])
        size = sum(int(np.size(p)) for p in parameters)
        quantizer, plan = self._quantizer_and_noise(strategy, len(cohort), size)
        if "clip_norm" in client_side:
            self.check_norm_bound(quantizer, size, float(client_side["clip_norm"]))
        settings = self._settings(cohort[0][1].config, client_side, quantizer, strategy, plan)
        server = SecAggServer(
            [client_id for client_id, _ in cohort],
            size + 1,
            server_round=server_round,
            bits=self.bits,
            parameters=self.graph(len(cohort)),
        )
        fit_metrics: list[tuple[int, Metrics]] = []
        try:
            for phase in PLAN:
                fit_metrics += phase.run(context, server, parameters, settings, level)
                server.close_phase()
        except SecAggAbortedError as error:
            message = "fit_round %d: secure aggregation aborted: %s; global model unchanged"
            log.log(level, message, server_round, error)
            return None
        result = server.result()
        survivors = len(result.survivors)
        transforms_state = transforms.summed(state["transforms"], survivors)
        if plan is None:
            mean, _ = quantizer.decode_mean(result.total, survivors)
        elif survivors < plan.min_survivors:  # the clients refuse to unmask this; never release
            log.log(level, "fit_round %d: too few survivors for distributed DP", server_round)
            return None
        else:
            mean = plan.decode_mean(result.total, survivors)
            transforms_state = noised(transforms, transforms_state, plan, size, survivors)
        return PartialFit(
            _unflatten(mean, parameters),
            {**state, "transforms": transforms_state},
            tuple(fit_metrics),
            {"secagg_survivors": float(survivors)},
            failures=len(cohort) - survivors,
        )

    def _quantizer_and_noise(
        self, strategy: SecureParts, cohort_size: int, size: int
    ) -> tuple[WeightedQuantizer, NoisePlan | None]:
        """The round's quantizer and, under distributed DP, its noise plan (which sizes it)."""
        noise = noise_member(strategy.update_transforms)
        if noise is None:
            return self.quantizer(strategy, cohort_size), None
        plan = NoisePlan.build(noise[1], self.clip_range, self.bits, cohort_size, size)
        return plan.quantizer, plan

    def quantizer(self, strategy: SecureParts, cohort_size: int) -> WeightedQuantizer:
        """The quantizer of a cohort of `cohort_size`: weights up to `max_weight`, or exactly 1
        when the strategy weighs clients uniformly (a step `max_weight` times finer)."""
        from roost.secagg import WeightedQuantizer

        max_weight = 1.0 if self._uniform(strategy) else self.max_weight
        return WeightedQuantizer(self.clip_range, max_weight, cohort_size, self.bits)

    @staticmethod
    def check_norm_bound(quantizer: WeightedQuantizer, size: int, clip_norm: float) -> None:
        """Refuse a quantizer so coarse that rounding could carry a client's update of `size`
        values past `clip_norm` even after the client clips below it (the sensitivity that
        central DP accounts for would not hold)."""
        margin = quantizer.rounding_norm(size)
        if margin >= clip_norm:
            raise ConfigurationError(
                f"secure aggregation's quantization step {quantizer.values.step:.3g} lets "
                f"rounding move a {size}-value update by up to {margin:.3g} in L2 norm, not less "
                f"than the clip norm {clip_norm:g}; raise --secagg-bits, lower --secagg-clip or "
                "sample fewer clients per round"
            )

    def _settings(
        self,
        fit_config: Config,
        client_side: Config,
        quantizer: WeightedQuantizer,
        strategy: SecureParts,
        plan: NoisePlan | None = None,
    ) -> Config:
        """The masked-input phase's config: the fit config, the quantizer's settings and, under
        distributed DP, every client's noise variance and the fewest survivors it unmasks for."""
        quant: Config = {
            "clip": float(quantizer.clip),
            "max_weight": float(quantizer.max_weight),
            "max_clients": quantizer.max_clients,
            "bits": quantizer.bits,
            "uniform": bool(self._uniform(strategy)),
        }
        if "clip_norm" in client_side:
            quant["clip_norm"] = float(client_side["clip_norm"])
        if plan is not None:
            quant["noise_variance"] = float(plan.variance)
            quant["min_survivors"] = int(plan.min_survivors)
        return {
            **{FIT_PREFIX + key: value for key, value in fit_config.items()},
            **{QUANT_PREFIX + key: value for key, value in quant.items()},
        }


@dataclass(frozen=True)
class SecurePhase:
    """One phase of a secure round: one kind of instruction to the cohort, through the same
    `RoundContext.exchange` (transport, timeouts, validation, failures) as every phase."""

    step: str
    """The protocol's step (a `roost.secagg.Phase` value), which the clients answer."""
    label: str
    """The phase's name in logs and in the round's record."""
    training: bool = False
    """Whether clients train in this phase: it carries the model and the fit config, and its
    replies carry fit metrics."""

    def run(
        self,
        context: RoundContext,
        server: SecAggServer,
        parameters: Parameters,
        settings: Config,
        level: int = logging.WARNING,
    ) -> list[tuple[int, Metrics]]:
        """Send the phase's instructions, hand every reply to `server`; return fit metrics
        (a client left out is logged at `level`)."""
        from roost.secagg import SecAggClientError

        if server.phase.value != self.step:
            raise RuntimeError(f"secure aggregation is at {server.phase.value}, not {self.step}")
        cohort = [
            (client_id, self._instruction(arrays, values, parameters, settings))
            for client_id, (arrays, values) in server.instructions().items()
        ]
        fit_metrics: list[tuple[int, Metrics]] = []
        for client_id, outcome in context.exchange(self.label, cohort, None):
            if isinstance(outcome, Failure):
                server.drop(client_id, outcome.reason)
                continue
            assert isinstance(outcome, PhaseRes)
            message = {k: v for k, v in outcome.values.items() if not k.startswith(FIT_PREFIX)}
            try:
                server.receive(client_id, outcome.arrays, message)
            except SecAggClientError as error:
                log.log(level, "%s: client %s left out: %s", self.label, client_id, error.reason)
                continue
            if self.training:
                metrics = {
                    k[len(FIT_PREFIX) :]: v
                    for k, v in outcome.values.items()
                    if k.startswith(FIT_PREFIX)
                }
                fit_metrics.append((1, metrics))
        return fit_metrics

    def _instruction(
        self, arrays: Sequence[np.ndarray], values: Config, parameters: Parameters, settings: Config
    ) -> PhaseIns:
        if self.training:
            return PhaseIns(PROTOCOL, self.step, parameters, list(arrays), {**values, **settings})
        return PhaseIns(PROTOCOL, self.step, [], list(arrays), dict(values))


PLAN = (
    SecurePhase("advertise_keys", "secagg_advertise_keys"),
    SecurePhase("share_keys", "secagg_share_keys"),
    SecurePhase("masked_input", "fit", training=True),
    SecurePhase("unmask", "secagg_unmask"),
)
"""A secure round, phase by phase (the order `roost.secagg.SecAggServer` runs them in)."""


def _unflatten(flat: np.ndarray, like: Parameters) -> Parameters:
    arrays, start = [], 0
    for reference in like:
        stop = start + int(np.size(reference))
        arrays.append(flat[start:stop].reshape(np.shape(reference)).astype(reference.dtype))
        start = stop
    return arrays
