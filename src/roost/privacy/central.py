"""Central differential privacy: DP-FedAvg's Gaussian mechanism as a part of the strategy chain.

McMahan et al. (ICLR 2018), "Learning Differentially Private Recurrent Language Models": the
server clips each client's update to L2 norm C, sums the cohort's clipped updates, adds Gaussian
noise of standard deviation σ·C to the sum and divides by the *expected* cohort size m — a fixed
denominator, so that one client's presence changes the result by at most C/m whatever the others
sent. The privacy spent over the rounds is tracked by a `dp_accounting` accountant
(`roost.privacy.accounting`).

Adaptive clipping (Andrew et al., NeurIPS 2021, "Differentially Private Learning with Adaptive
Clipping") moves C toward the `clip_quantile` of the update norms. The count of unclipped updates
is itself private data, so it is released with Gaussian noise of std σ_b, and the update noise
multiplier is raised to z_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2): the two Gaussian releases together cost
exactly what one release with multiplier σ would, and the accountant charges σ.

`CentralDP` needs the aggregate it finishes to be the plain mean of the clipped updates (it turns
it back into their sum): use it with ``aggregator=Mean()`` (or `SampledMean`, which also accepts
an empty Poisson cohort) and ``weight_fn=uniform_weight``, and last among the update transforms.
It checks this every round and stops with a ConfigurationError if the aggregate is something
else. Any server optimizer may follow:

    Strategy(
        aggregator=SampledMean(), weight_fn=uniform_weight, sampler=PoissonSampler(0.01),
        update_transforms=[CentralDP(1.0, 0.5, expected_clients=100, num_clients=10_000)],
        server_optimizer=ServerAdam(0.01),
    )

Integer arrays in the model (counters) take no part: their update is set to zero, since noise
cannot be added to them and an un-noised change would reveal something.
"""

from __future__ import annotations

import logging
import math
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

import numpy as np

from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError, RunFinished
from roost.privacy import accounting
from roost.privacy.noise import SecureRandom, noise_source, warn_not_private
from roost.strategy.aggregators import Mean
from roost.strategy.base import Measurements, State, UpdateTransform
from roost.strategy.transforms import clip_to_norm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampledMean(Mean):
    """`Mean()` that also accepts an empty cohort (`min_updates = 0`).

    Poisson sampling may choose nobody; the round then passes without a model change instead of
    stopping the run.
    """

    min_updates = 0


def _is_float(array: np.ndarray) -> bool:
    return np.asarray(array).dtype.kind == "f"


@dataclass(frozen=True)
class CentralDPParams:
    """`CentralDP`'s parameters as one value: nothing checked, built or logged yet.

    Hand them to `with_central_dp(strategy, params)`, or keep them until the strategy is built
    (as the command line does); `CentralDP` documents each field.
    """

    noise_multiplier: float
    clip_norm: float
    expected_clients: int
    _: KW_ONLY
    num_clients: int
    sampling: str = "poisson"
    delta: float | None = None
    target_epsilon: float | None = None
    accountant: str = "rdp"
    clip_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_noise_stddev: float | None = None
    seed: int | None = None

    def options(self) -> dict[str, Any]:
        """The parameters as keyword arguments: `CentralDP(**p.options())`, or `DPFedAvg`'s."""
        return {item.name: getattr(self, item.name) for item in fields(CentralDPParams)}


@dataclass(frozen=True)
class CentralDP(CentralDPParams, UpdateTransform):
    """DP-FedAvg's clip-and-noise, optionally with adaptive clipping, and its privacy accountant.

    Args:
        noise_multiplier: σ: noise of std σ·C is added to the sum of clipped updates. 0 adds no
            noise (clipped FedAvg, no privacy; a warning says so).
        clip_norm: C, the L2 bound of every update (the starting bound when adaptive).
        expected_clients: m, the expected cohort size, the fixed denominator of the mean.
        num_clients: N, all clients that could be sampled (q = m/N for the accountant).
        sampling: "poisson" (`PoissonSampler(m/N)`) or "fixed" (`FixedSizeSampler(m)`); must be
            how the strategy really samples, or ε is wrong.
        delta: the δ of the reported ε (default `default_delta(N)` = min(1e-5, 1/N²)); one
            of 1/N or more is refused.
        target_epsilon: stop the run (`RunFinished`) before the round that would exceed it.
        accountant: "rdp" or "pld" (Poisson sampling only).
        clip_quantile: γ; when set, C adapts so that a γ share of updates stays unclipped.
        clip_learning_rate: η_C of the geometric update C ← C·exp(−η_C·(b̃ − γ)) (default 0.2).
        count_noise_stddev: σ_b, noise on the unclipped count (default m/20, as in the paper).
        seed: research only: reproducible noise; the run is NOT private.

    State: ``{"rounds", "open", "clip_norm", "seen", "unclipped", "coordinate_sum", "magnitude",
    "shapes", "dtypes"}`` — the rounds accounted so far (the accountant's whole history: the
    mechanism is the same every round), whether a round is in progress, the bound, this round's
    tallies and the model's array shapes. No key material: the noise of round r is drawn from a
    fresh `os.urandom` key (or, seeded, from (seed, r)). Each round measures ``epsilon`` and
    ``delta`` (when σ > 0; `History.privacy` reads them), ``clip_norm`` and, when adaptive, the
    noised ``unclipped_share``.
    """

    # ε covers the released models only: client metrics, cohort sizes and failures are withheld.
    withholds_client_statistics = True

    @classmethod
    def from_params(cls, params: CentralDPParams) -> CentralDP:
        """The transform of the parameters `params` (checked and resolved here)."""
        return cls(**params.options())

    def __post_init__(self) -> None:
        _check_cohort(self.sampling, self.expected_clients, self.num_clients)
        if not self.noise_multiplier >= 0 or math.isinf(self.noise_multiplier):
            raise ConfigurationError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0 or math.isinf(self.clip_norm):
            raise ConfigurationError(f"clip_norm must be a finite number > 0, got {self.clip_norm}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigurationError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        # Resolved once, so repr and the accountant show the δ in use.
        object.__setattr__(self, "delta", accounting.resolve_delta(self.delta, self.num_clients))
        self._check_adaptive()
        # Fail now, not after the first round, on a δ or accountant that cannot be used.
        self.epsilon(1)
        if self.seed is not None:
            warn_not_private("CentralDP", self.seed)
        if self.noise_multiplier == 0:
            log.warning("CentralDP(noise_multiplier=0) only clips: the run has no privacy")

    def _check_adaptive(self) -> None:
        if self.clip_quantile is None:
            return
        if not 0.0 <= self.clip_quantile <= 1.0:
            raise ConfigurationError(f"clip_quantile must be in [0, 1], got {self.clip_quantile}")
        if not self.clip_learning_rate > 0:
            raise ConfigurationError(
                f"clip_learning_rate must be > 0, got {self.clip_learning_rate}"
            )
        if self.noise_multiplier > 0 and not 2 * self.count_noise > self.noise_multiplier:
            raise ConfigurationError(
                f"count_noise_stddev {self.count_noise:g} leaves no privacy budget for the "
                f"updates: pass count_noise_stddev > noise_multiplier / 2 = "
                f"{self.noise_multiplier / 2:g} (the default, expected_clients / 20, suits "
                "cohorts of hundreds)"
            )

    @property
    def count_noise(self) -> float:
        """σ_b, the std of the noise on the unclipped count (0 without adaptive clipping or σ)."""
        if self.clip_quantile is None or self.noise_multiplier == 0:
            return 0.0
        if self.count_noise_stddev is None:
            return self.expected_clients / 20
        return float(self.count_noise_stddev)

    @property
    def update_noise_multiplier(self) -> float:
        """z_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2): the updates' share of σ when the count is noised too."""
        if self.count_noise == 0:
            return float(self.noise_multiplier)
        return (self.noise_multiplier**-2 - (2 * self.count_noise) ** -2) ** -0.5

    @property
    def accounting_args(self) -> dict[str, Any]:
        """The accountant's description of the cohort: q = m/N (Poisson) or m of N (fixed)."""
        if self.sampling == "fixed":
            return {
                "sampling": "fixed",
                "cohort": self.expected_clients,
                "population": self.num_clients,
            }
        return {"sampling": "poisson", "q": self.expected_clients / self.num_clients}

    def epsilon(self, rounds: int) -> float:
        """ε after `rounds` rounds at this transform's δ (∞ when σ = 0)."""
        return accounting.epsilon(
            self.noise_multiplier,
            rounds,
            self.delta,
            accountant=self.accountant,
            **self.accounting_args,
        )

    # -- steps --------------------------------------------------------------------------------

    def init(self, template: Parameters) -> State:
        return self._fresh(
            0,
            False,
            self.clip_norm,
            [[int(n) for n in np.shape(a)] for a in template],
            [np.asarray(a).dtype.str for a in template],
        )

    @staticmethod
    def _fresh(rounds: int, is_open: bool, clip_norm: float, shapes: list, dtypes: list) -> State:
        return {
            "rounds": rounds,
            "open": is_open,
            "clip_norm": float(clip_norm),
            "seen": 0,
            "unclipped": 0,
            "coordinate_sum": 0.0,
            "magnitude": 0.0,
            "shapes": shapes,
            "dtypes": dtypes,
        }

    def start_round(self, state: State) -> State:
        """Count the coming round, or end the run if it would exceed `target_epsilon`."""
        rounds = state["rounds"] + 1
        if self.target_epsilon is not None and self.noise_multiplier > 0:
            spent, next_epsilon = self.epsilon(rounds - 1), self.epsilon(rounds)
            if next_epsilon > self.target_epsilon:
                raise RunFinished(
                    f"the privacy budget is spent: round {rounds} would raise ε from "
                    f"{spent:.4g} to {next_epsilon:.4g} > target_epsilon {self.target_epsilon:g} "
                    f"(δ = {self.delta:.3g}); raise target_epsilon or noise_multiplier to train "
                    "longer"
                )
        return {**state, "rounds": rounds, "open": True}

    @staticmethod
    def round_open(state: State) -> bool:
        """Whether a round was started and not finished (its cohort aggregated nothing)."""
        return bool(state["open"])

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        """Clip one update to the round's bound and tally it."""
        floats = [a if _is_float(a) else np.zeros_like(a) for a in update]
        clipped, norm = clip_to_norm(floats, state["clip_norm"])
        flat = [np.asarray(a, np.float64) for a in clipped]
        return clipped, {
            **state,
            "seen": state["seen"] + 1,
            "unclipped": state["unclipped"] + int(norm <= state["clip_norm"]),
            "coordinate_sum": state["coordinate_sum"] + float(sum(a.sum() for a in flat)),
            "magnitude": state["magnitude"] + float(sum(np.abs(a).sum() for a in flat)),
        }

    def client_side(self, state: State) -> Config:
        """Under secure aggregation each client clips its own update to the round's bound."""
        if self.clip_quantile is not None:
            raise ConfigurationError(
                "adaptive clipping counts unclipped updates one by one, which secure aggregation "
                "hides; use a fixed clip norm (no clip_quantile) with secure aggregation"
            )
        return {"clip_norm": state["clip_norm"]}

    def summed(self, state: State, count: int) -> State:
        """`count` clipped updates were summed securely: the sum is known, not its parts, so
        the plain-mean check has nothing to compare with (an infinite tolerance)."""
        return {**state, "seen": count, "magnitude": math.inf}

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        """Noise the round's sum, divide by m, move the bound and report ε."""
        # A round finished without start_round (aggregate_fit called directly) still counts.
        rounds = state["rounds"] if state["open"] else state["rounds"] + 1
        clip_norm = state["clip_norm"]
        source = noise_source(self.seed, "CentralDP", rounds)
        if aggregate is not None:
            self._check_plain_mean(aggregate, state)
        noised = self._noised_mean(aggregate, state, source)
        measurements: Measurements = {"clip_norm": clip_norm}
        if self.clip_quantile is not None and state["seen"]:
            share = self._noised_unclipped_share(state, source)
            clip_norm *= math.exp(-self.clip_learning_rate * (share - self.clip_quantile))
            measurements["unclipped_share"] = share
        if self.noise_multiplier > 0:
            measurements["epsilon"] = self.epsilon(rounds)
            measurements["delta"] = float(self.delta)
        next_state = self._fresh(rounds, False, clip_norm, state["shapes"], state["dtypes"])
        return noised, next_state, measurements

    # -- the mechanism --------------------------------------------------------------------------

    def _noised_mean(
        self, aggregate: Parameters | None, state: State, source: SecureRandom
    ) -> Parameters | None:
        """(sum of clipped updates + N(0, (z_Δ·C)²)) / m, the sum recovered from the mean."""
        std = self.update_noise_multiplier * state["clip_norm"]
        if aggregate is None and std == 0:
            return None  # nothing arrived and nothing to add: the model stays, as in FedAvg
        share = state["seen"] / self.expected_clients
        noised = []
        for index, (shape, dtype) in enumerate(zip(state["shapes"], state["dtypes"], strict=True)):
            total = (
                np.zeros(shape)
                if aggregate is None
                else np.asarray(aggregate[index], np.float64) * share
            )
            if np.dtype(dtype).kind == "f" and std > 0:
                total = total + source.normal(std, tuple(shape)) / self.expected_clients
            noised.append(total.astype(dtype))
        return noised

    def _noised_unclipped_share(self, state: State, source: SecureRandom) -> float:
        """b̃ = (Σ(bᵢ − ½) + N(0, σ_b²)) / m + ½: shifting by ½ halves the count's sensitivity."""
        shifted = state["unclipped"] - state["seen"] / 2
        if self.count_noise > 0:
            shifted += float(source.normal(self.count_noise, 1)[0])
        return shifted / self.expected_clients + 0.5

    def _check_plain_mean(self, aggregate: Parameters, state: State) -> None:
        """Refuse an aggregate that is not the unweighted mean of the updates this part clipped."""
        floats = [np.asarray(a, np.float64) for a in aggregate if _is_float(a)]
        recovered = float(sum(a.sum() for a in floats)) * state["seen"]
        worst = max((np.finfo(a.dtype).eps for a in aggregate if _is_float(a)), default=0.0)
        tolerance = 64 * float(worst) * state["magnitude"] + 1e-12
        if abs(recovered - state["coordinate_sum"]) > tolerance:
            raise ConfigurationError(
                "CentralDP needs the unweighted mean of the clipped updates, but the aggregate "
                "is something else; use aggregator=Mean() (or SampledMean()) with "
                "weight_fn=uniform_weight, and put CentralDP last in update_transforms"
            )


def _check_cohort(sampling: str, expected_clients: int, num_clients: int) -> None:
    for name, value in (("expected_clients", expected_clients), ("num_clients", num_clients)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    if expected_clients > num_clients:
        raise ConfigurationError(
            f"expected_clients ({expected_clients}) cannot exceed num_clients ({num_clients})"
        )
    if sampling not in accounting.SAMPLINGS:
        raise ConfigurationError(
            f"sampling must be one of {', '.join(accounting.SAMPLINGS)}; got {sampling!r}"
        )
