"""DP-FedAvg as a named strategy: `roost.privacy`'s parts wired into one `Strategy`.

`roost.DPFedAvg` (also `roost.strategy.DPFedAvg`, and ``PRESETS["dpfedavg"]``) is this class,
registered into `roost.strategy.presets.PRESETS` from here: it lives beside the parts it wires,
above the strategy layer, which does not import privacy. `dp_fedavg_parts` gives the same parts
for a `Strategy(...)` of your own, and `with_central_dp(strategy, ...)` makes any mean-aggregating
strategy (FedAdam, FedProx, ...) DP-FedAvg with that strategy's server optimizer.
"""

from __future__ import annotations

from typing import Any

from roost.core.types import Parameters
from roost.errors import ConfigurationError
from roost.privacy.central import CentralDP, CentralDPParams, SampledMean
from roost.privacy.sampling import FixedSizeSampler, PoissonSampler
from roost.strategy.aggregators import Mean, WeightedMean
from roost.strategy.base import (
    FitAggregate,
    FunctionWeighting,
    PartialFit,
    RoundContext,
    State,
)
from roost.strategy.options import STRATEGY_KNOBS, NamedStrategy, Option, register_preset
from roost.strategy.strategy import Strategy
from roost.strategy.weighting import uniform_weight, weight_by_num_examples


def dp_fedavg_parts(
    noise_multiplier: float | None,
    clip_norm: float | None,
    expected_clients: int | None,
    *,
    num_clients: int | None,
    **options: Any,
) -> dict[str, Any]:
    """The `Strategy` parts of DP-FedAvg: secret sampler, `CentralDP`, unweighted mean.

    Returns `aggregator`, `weight_fn`, `sampler` and `update_transforms` for `Strategy(...)`;
    the arguments are `CentralDP`'s. The sampler is `PoissonSampler(m/N)`, or
    `FixedSizeSampler(m)` for ``sampling="fixed"``, so the accountant analyses what happens.
    """
    required = {
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip_norm,
        "expected_clients": expected_clients,
        "num_clients": num_clients,
    }
    if missing := [name for name, value in required.items() if value is None]:
        raise ConfigurationError(
            f"DP-FedAvg needs {', '.join(missing)}, e.g. DPFedAvg(noise_multiplier=1.0, "
            "clip_norm=0.1, expected_clients=100, num_clients=10_000)"
        )
    if unknown := sorted(set(options) - set(DP_FEDAVG_OPTIONS)):
        raise ConfigurationError(f"DP-FedAvg has no option {', '.join(unknown)}")
    return central_dp_parts(CentralDPParams(**required, **options))


def central_dp_parts(params: CentralDPParams) -> dict[str, Any]:
    """`dp_fedavg_parts` of the parameters `params`: the one place DP-FedAvg's parts are made."""
    central = CentralDP.from_params(params)
    # The samplers check, every round, that the clients they sample from are the N accounted.
    n = central.num_clients
    sampler = (
        FixedSizeSampler(central.expected_clients, seed=central.seed, population=n)
        if central.sampling == "fixed"
        else PoissonSampler(central.expected_clients / n, seed=central.seed, population=n)
    )
    return {
        "aggregator": SampledMean(),
        "weight_fn": uniform_weight,
        "sampler": sampler,
        "update_transforms": [central],
    }


_REQUIRED_DP = ("noise_multiplier", "clip_norm", "expected_clients", "num_clients")


@register_preset  # so `--strategy dpfedavg` and `preset("dpfedavg")` know it
class DPFedAvg(NamedStrategy):
    """DP-FedAvg (McMahan et al., ICLR 2018): secret sampling, clipping, noise, accounting.

    Each round a secret sampler picks the cohort, `CentralDP` clips every update to C, adds
    Gaussian noise of std σ·C to their sum and divides by m, and the accountant records `epsilon`
    (at δ) in `History.measurements`. Any server optimizer may follow (DP-FedAdam:
    ``server_optimizer=ServerAdam(...)``; `with_central_dp` builds it from a preset). Every
    `Strategy` knob is accepted, but not the parts DP-FedAvg sets itself (aggregator, weight_fn,
    sampler); `update_transforms` run before `CentralDP`, which always comes last.

    A round whose cohort is empty (Poisson sampling may choose nobody) still releases the noise,
    as the accountant assumes: the model moves by noise alone.
    """

    options = (
        Option("noise_multiplier", float, help="σ, noise std over the clip norm", at_least=0),
        Option("clip_norm", float, help="C, the L2 bound of every update", above=0),
        Option("expected_clients", int, help="m, clients per round (expected)", at_least=1),
        Option("num_clients", int, help="N, all clients (q = m/N)", at_least=1),
        Option("sampling", str, "poisson", "how cohorts are drawn: 'poisson' or 'fixed'"),
        Option("delta", float, None, "δ of the reported ε (None: min(1e-5, 1/N²))"),
        Option("target_epsilon", float, None, "stop before the round that would exceed this ε"),
        Option("accountant", str, "rdp", "'rdp' or 'pld' (Poisson sampling only)"),
        Option("clip_quantile", float, None, "adapt C so this share of updates stays unclipped"),
        Option("clip_learning_rate", float, 0.2, "η_C, the step of the adaptive bound"),
        Option("count_noise_stddev", float, None, "σ_b, noise on the unclipped count (m/20)"),
        Option("seed", int, None, "research only: reproducible noise; the run is NOT private"),
    )

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        parts = central_dp_parts(CentralDPParams(**self.option_values()))
        self.central_dp: CentralDP = parts["update_transforms"][0]
        # The user's transforms go first: CentralDP must see the updates last and the mean first.
        parts["update_transforms"] = [*knobs.pop("update_transforms", ()), self.central_dp]
        return parts

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> FitAggregate:
        """The round's fit phase; a round that aggregated nothing still releases the noise."""
        fitted = super().fit_round(context, parameters, state)
        if not self.central_dp.round_open(fitted.state["transforms"][-1]):
            return fitted
        # Nobody was sampled, so aggregation never ran; the accountant charged this round for
        # a Gaussian release, and skipping it would reveal that the cohort was empty.
        return self.conclude_fit(context.server_round, parameters, PartialFit(None, fitted.state))


DP_FEDAVG_OPTIONS = tuple(
    option.name for option in DPFedAvg.options if option.name not in _REQUIRED_DP
)
"""`CentralDP`'s keyword options, which `DPFedAvg` passes on."""


def with_central_dp(
    strategy: Strategy, params: CentralDPParams | None = None, /, **dp_options: Any
) -> DPFedAvg:
    """`strategy` made differentially private: DP-FedAvg with its server optimizer.

    Keeps the strategy's knobs, server optimizer, update rule, update transforms (before
    `CentralDP`) and fit-config entries (FedProx's μ, FedAdam's client learning rate); replaces
    its aggregation by DP-FedAvg's uniform mean over a secret cohort. Refused for a strategy that
    does not average the updates (median, trimmed mean, Krum, q-FedAvg, weights of its own).

    Args:
        strategy: a mean-aggregating strategy, e.g. `FedAdam(...)` or `FedProx(...)`.
        params: the DP-FedAvg parameters as one `CentralDPParams`, instead of `dp_options`.
        **dp_options: `DPFedAvg`'s options (noise_multiplier, clip_norm, expected_clients,
            num_clients, sampling, delta, target_epsilon, ...).
    """
    if params is not None:
        if dp_options:
            raise ConfigurationError(
                f"with_central_dp takes CentralDPParams or its options, not both; got "
                f"{', '.join(sorted(dp_options))} besides the parameters"
            )
        dp_options = params.options()
    if isinstance(strategy, DPFedAvg):
        raise ConfigurationError("the strategy is DP-FedAvg already; build it with its options")
    if strategy.needs_clock:
        raise ConfigurationError(
            f"{type(strategy).__name__} is asynchronous, and DP-FedAvg's secret sampling is a "
            f"synchronous cohort; give {type(strategy).__name__} a CentralDP transform with "
            "expected_clients = num_clients = buffer_size instead (noise per aggregation)"
        )
    _check_mean_aggregation(strategy)
    declared = strategy.option_values() if isinstance(strategy, NamedStrategy) else {}
    if declared.get("line_search_probes"):
        raise ConfigurationError(
            "FedSGD's line search asks clients for their loss in the clear; central DP cannot "
            "protect it: set line_search_probes=0"
        )
    knobs = {knob: getattr(strategy, knob) for knob in STRATEGY_KNOBS}  # fit-config entries too
    return DPFedAvg(
        **knobs,
        **dp_options,
        server_optimizer=strategy.server_optimizer,
        update_fn=strategy.update_fn,
        update_transforms=strategy.update_transforms,
        secure_aggregation=strategy.secure_aggregation,
        compression=strategy.compression,
    )


def _check_mean_aggregation(strategy: Strategy) -> None:
    name = type(strategy).__name__
    averages = isinstance(strategy.aggregator, Mean | WeightedMean) and (
        not isinstance(strategy, NamedStrategy) or type(strategy).mean_aggregation
    )
    if not averages:
        raise ConfigurationError(
            f"central DP adds noise to a mean of clipped updates, but {name} aggregates with "
            f"{strategy.aggregator!r}; use local DP, or a strategy that averages"
        )
    accepted = (FunctionWeighting(weight_by_num_examples), FunctionWeighting(uniform_weight))
    if strategy.weight_fn not in accepted:
        raise ConfigurationError(
            f"central DP weighs every client equally, but {name} has its own weight_fn "
            f"{strategy.weight_fn!r}; drop it (and weight_metric)"
        )
