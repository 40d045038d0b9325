"""What a run is asked to do, as one value that travels one way.

The command line reads its options once into a `RunSettings` (`roost.cli.settings`): the round and
training settings, the strategy it asks for (`StrategySpec`: a preset, its options, clipping,
privacy, secure aggregation) and the options of the app's own. An app (`roost.App`) reads them,
supplies only its own knobs (its initial model, evaluation, config functions) and builds its
strategy once with `RunSettings.build_strategy`; nothing is changed on a strategy after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.client.client import ClientFn
from roost.core.codecs import Codec
from roost.errors import ConfigurationError
from roost.privacy.accounting import DEFAULT_DELTA_RULE
from roost.privacy.central import CentralDPParams
from roost.privacy.local import LocalDPAccountant, LocalDPClientFn
from roost.privacy.preset import with_central_dp
from roost.server.history import History
from roost.strategy.base import UpdateTransform
from roost.strategy.options import PRESETS, preset
from roost.strategy.secure import SecureAggregation
from roost.strategy.strategy import Strategy


@dataclass(frozen=True)
class PrivacySettings:
    """What `--dp` asks of a run.

    Args:
        params: the mechanism's parameters, δ resolved (central DP builds its transform from
            them as they are; local DP reads σ, C, δ and the target ε).
        mode: "central" or "local".
        delta_is_default: whether δ is the default rule's (the run says so).
    """

    params: CentralDPParams
    mode: str
    delta_is_default: bool

    def central(self, strategy: Strategy) -> Strategy:
        """`strategy` as DP-FedAvg with these parameters (its server optimizer kept)."""
        return with_central_dp(strategy, self.params)

    def local_accountant(self) -> LocalDPAccountant:
        """The server-side record of each client's local-DP ε."""
        p = self.params
        return LocalDPAccountant(p.noise_multiplier, delta=p.delta, target_epsilon=p.target_epsilon)

    def client_fn(self, client_fn: ClientFn) -> ClientFn:
        """`client_fn` whose clients clip and noise their updates (local DP; else unchanged)."""
        if self.mode != "local":
            return client_fn
        return LocalDPClientFn(client_fn, self.params.clip_norm, self.params.noise_multiplier)

    def describe(self) -> str:
        """One line: the mechanism, its parameters and the δ (saying when it was chosen)."""
        p = self.params
        m, n = p.expected_clients, p.num_clients
        if self.mode == "central":
            cohort = (
                f"each of {n} clients joins a round with probability q = {m / n:.3g}"
                if p.sampling == "poisson"
                else f"{m} of {n} clients a round"
            )
            clip = f"C = {p.clip_norm:g}" + (
                f" adapting to quantile {p.clip_quantile:g} (count noise "
                f"{p.count_noise_stddev:.3g})"
                if p.clip_quantile is not None
                else ""
            )
            what = f"central DP: {cohort} (secret sampling), updates clipped to {clip}"
        else:
            what = f"local DP: every client clips its update to C = {p.clip_norm:g}"
        noise = (
            "no noise, so no privacy (σ = 0)"
            if p.noise_multiplier == 0
            else f"noise σ = {p.noise_multiplier:g}"
        )
        chosen = f" ({DEFAULT_DELTA_RULE} for N = {n}, the default; --delta sets it)"
        return (
            f"{what}, {noise}; ε reported at δ = {p.delta:.3g}"
            f"{chosen if self.delta_is_default else ''}"
        )

    def stopped_early(self, history: History, num_rounds: int) -> str | None:
        """The line saying the run stopped at `target_epsilon`, or None if it did not."""
        done, target = len(history.rounds), self.params.target_epsilon
        if target is None or done >= num_rounds:
            return None
        privacy = history.privacy
        spent = privacy.epsilon[-1][1] if privacy is not None and privacy.epsilon else 0.0
        return (
            f"privacy budget reached: stopped after round {done} of {num_rounds}, at ε = "
            f"{spent:.4g} (δ = {self.params.delta:.3g}); one more round would pass "
            f"--target-epsilon {target:g}"
        )


@dataclass(frozen=True)
class StrategySpec:
    """The strategy a run asks for, before it is built.

    Args:
        name: a preset's name (`roost.strategy.PRESETS`); "dpfedavg" is FedAvg under central DP.
        options: that preset's own options (`{"eta": 0.05}` for FedAdam's `--server-lr`).
        clip: a clipping transform (`--clip-norm` without DP), or None.
        privacy: differential privacy (None: none).
        secure_aggregation: SecAgg+ (None: updates in the clear).
        compression: the codec clients compress their updates with (None: uncompressed).
        given: whether any of these was asked for: an app that brings its own strategy refuses
            them.
    """

    name: str = "fedavg"
    options: Mapping[str, Any] = field(default_factory=dict)
    clip: UpdateTransform | None = None
    privacy: PrivacySettings | None = None
    secure_aggregation: SecureAggregation | None = None
    given: bool = False
    compression: Codec | None = None

    @property
    def preset_name(self) -> str:
        """The preset built: dpfedavg is fedavg made private by central DP."""
        return "fedavg" if self.name == "dpfedavg" and self.privacy is not None else self.name


@dataclass(frozen=True)
class RunSettings:
    """What a run is asked to do; an app maps these onto its clients and strategy.

    Args:
        num_clients: clients in the federation (`roost server`: the clients it waits for).
        num_rounds: federated rounds.
        fraction_fit: share of the clients trained per round.
        fraction_evaluate: share of the clients evaluating per round.
        local_epochs: local epochs per round.
        batch_size: local mini-batch size.
        learning_rate: the clients' local learning rate.
        seed: seed of client sampling, the data split and local shuffling.
        round_timeout: seconds a client may take per instruction (None: no limit).
        engine: the engine asked for (None: the app chooses).
        strategy: the strategy asked for.
        app_options: the values of the app's own options (`App.add_arguments`), by name.
        given: the round and training settings set explicitly (by their option names: "rounds",
            "lr", ...), so that `--rounds 5` differs from the default.
    """

    num_clients: int = 10
    num_rounds: int = 5
    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.5
    seed: int = 0
    round_timeout: float | None = None
    engine: str | None = None
    strategy: StrategySpec = field(default_factory=StrategySpec)
    app_options: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    @property
    def privacy(self) -> PrivacySettings | None:
        """The run's differential privacy (None: none)."""
        return self.strategy.privacy

    @property
    def secure_aggregation(self) -> SecureAggregation | None:
        """The run's secure aggregation (None: updates in the clear)."""
        return self.strategy.secure_aggregation

    def build_strategy(self, knobs: Mapping[str, Any]) -> Strategy:
        """The strategy these settings ask for, built once: the preset with the app's `knobs`
        (fractions, minimums, initial model, config functions ...), its options, clipping and
        secure aggregation; with central DP, made private. A preset option that restates a run
        setting (FedAdam's `eta_l`, the clients' learning rate) takes it from here."""
        spec = self.strategy
        name = spec.preset_name
        privacy = spec.privacy
        if privacy is not None and privacy.mode == "central":
            _check_central_dp_strategy(name)
        mirrored = {
            option.name: getattr(self, option.mirrors)
            for option in PRESETS[name].options
            if option.mirrors is not None
        }
        parts: dict[str, Any] = {}
        if spec.clip is not None:
            parts["update_transforms"] = [spec.clip]
        if privacy is not None and privacy.mode == "local":
            parts["update_transforms"] = [privacy.local_accountant()]
            # Its clients send no evaluation results (`LocalDP`): evaluate on the server only.
            knobs = {**knobs, "fraction_evaluate": 0.0}
        if spec.secure_aggregation is not None:
            parts["secure_aggregation"] = spec.secure_aggregation
        if spec.compression is not None:
            parts["compression"] = spec.compression
        strategy = preset(name, **{**knobs, **mirrored, **spec.options, **parts})
        if privacy is not None and privacy.mode == "central":
            return privacy.central(strategy)
        return strategy


def _check_central_dp_strategy(name: str) -> None:
    """Refuse, in one line, central DP with a preset that does not average updates."""
    if PRESETS[name].needs_clock:
        raise ConfigurationError(
            f"--dp central samples a secret synchronous cohort, and --strategy {name} is "
            "asynchronous; give it a CentralDP transform (noise per aggregation) in Python, as "
            "docs/how-to/async.md shows, or use --dp local"
        )
    if PRESETS[name].mean_aggregation:
        return
    means = sorted(
        key for key, cls in PRESETS.items() if cls.mean_aggregation and not cls.needs_clock
    )
    raise ConfigurationError(
        f"--dp central adds noise to the mean of the updates, and --strategy {name} aggregates "
        f"otherwise (robustly); choose one of {', '.join(means)}, or --dp local"
    )
