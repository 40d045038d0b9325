"""Distributed DP: clients add discrete Gaussian noise before SecAgg+, so no one sees a clean sum.

Kairouz, Liu and Steinke (ICML 2021), "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation". With `DistributedDP` among a strategy's update transforms and
`SecureAggregation` on, every client clips its update to L2 norm C, quantizes it and adds integer
noise N_Z(0, σ_c²) per coordinate before masking (`roost.secagg.ddp`), with σ_c chosen so that the
noise of `min_survivors` = n_min clients sums to std z·C (`roost.strategy.secure_noise`). The
server unmasks only the noised sum; fewer than n_min survivors abort the round (the clients refuse
to unmask), and more only add noise:

    Strategy(
        aggregator=Mean(), weight_fn=uniform_weight, fraction_fit=1.0,
        update_transforms=[DistributedDP(3.0, 0.5, min_survivors=90, num_clients=100)],
        secure_aggregation=SecureAggregation(clip_range=0.5, bits=32),
    )

Accounting. A round is ½ε_r²-concentrated DP with ε_r from Theorem 1 of the paper
(`roost.secagg.ddp.zcdp_epsilon`: n_min clients, the round's σ_c and d values in quantization
levels, sensitivity 2C for one client's update replaced, the τ term for the sum of discrete
Gaussians not being one). Concentrated DP composes by adding ρ_r = ε_r²/2, and ρ-zCDP has the
Rényi curve α·ρ of a Gaussian mechanism with noise multiplier 1/√(2ρ), so `dp_accounting`'s RDP
accountant turns the summed ρ into (ε, δ). No amplification by sampling is claimed: the
subsampled-Gaussian bounds do not carry over to the discrete mechanism, so ε holds for a client
in every round, whichever cohorts were drawn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError
from roost.privacy import accounting
from roost.strategy.base import Measurements, State
from roost.strategy.secure_noise import SecureNoise

log = logging.getLogger(__name__)


def epsilon_of_rho(rho: float, delta: float) -> float:
    """(ε, δ) of ρ-zCDP, by `dp_accounting`'s RDP conversion (∞ for ρ = ∞, 0 for ρ = 0)."""
    if rho == 0:
        return 0.0
    if math.isinf(rho):
        return math.inf
    return accounting.epsilon(1 / math.sqrt(2 * rho), 1, delta, sampling="poisson", q=1.0)


def round_rho(sensitivity: float, clients: int, variance: float, dimension: int) -> float:
    """ρ of one round: ½ε_r² with ε_r from Kairouz et al.'s Theorem 1."""
    from roost.secagg.ddp import zcdp_epsilon

    return 0.5 * zcdp_epsilon(sensitivity, clients, variance, dimension) ** 2


@dataclass(frozen=True)
class DistributedDP(SecureNoise):
    """The distributed discrete Gaussian mechanism and its accountant (needs secure aggregation).

    Args:
        noise_multiplier: z: the noise of `min_survivors` clients sums to std z·C.
        clip_norm: C, the L2 bound of every client's update (after quantization).
        min_survivors: n_min, the fewest clients whose noise a released sum contains; a round
            with fewer survivors is aborted.
        num_clients: N, all clients (for the default δ = min(1e-5, 1/N²)).
        delta: the δ of the reported ε.

    State: ``{"rounds", "rho"}``, the rounds released and their summed zCDP ρ. Each released
    round measures ``epsilon`` and ``delta`` (`History.privacy` reads them).
    """

    noise_multiplier: float
    clip_norm: float
    min_survivors: int
    num_clients: int
    delta: float | None = None

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError(
                f"noise_multiplier must be a finite number > 0, got {self.noise_multiplier}"
            )
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigurationError(f"clip_norm must be a finite number > 0, got {self.clip_norm}")
        for name in ("min_survivors", "num_clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if self.min_survivors > self.num_clients:
            raise ConfigurationError(
                f"min_survivors ({self.min_survivors}) cannot exceed num_clients "
                f"({self.num_clients})"
            )
        object.__setattr__(self, "delta", accounting.resolve_delta(self.delta, self.num_clients))

    def init(self, template: Parameters) -> State:
        return {"rounds": 0, "rho": 0.0}

    def apply(self, update: Parameters, state: State) -> tuple[Parameters, State]:
        """Refused: the clients add the noise, which needs secure aggregation."""
        raise ConfigurationError(
            "DistributedDP noises updates on the clients under secure aggregation; pass "
            "secure_aggregation=SecureAggregation(...) to the strategy, or use CentralDP"
        )

    def client_side(self, state: State) -> Config:
        """Every client clips its own update to C (the noise settings come from the plan)."""
        return {"clip_norm": float(self.clip_norm)}

    def noised(
        self, state: State, variance: float, sensitivity: float, dimension: int, survivors: int
    ) -> State:
        """Charge one released round: n_min clients' noise of `variance` on `dimension` values."""
        rho = round_rho(sensitivity, self.min_survivors, variance, dimension)
        return {"rounds": state["rounds"] + 1, "rho": state["rho"] + rho}

    def epsilon(self, rho: float) -> float:
        """ε at this transform's δ after rounds whose ρ sum to `rho`."""
        assert self.delta is not None
        return epsilon_of_rho(rho, self.delta)

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        """The clients' noise is already in the aggregate; report ε so far."""
        assert self.delta is not None
        measurements: Measurements = {}
        if state["rounds"]:
            measurements = {"epsilon": self.epsilon(state["rho"]), "delta": float(self.delta)}
        return aggregate, state, measurements
