"""Differential privacy for federated learning, as parts of the strategy chain.

- `CentralDP` (with `SampledMean`, `PoissonSampler`, `FixedSizeSampler`): DP-FedAvg's clipping
  and Gaussian noise on the server, with adaptive clipping and a privacy accountant in its state;
  `DPFedAvg` (also `roost.strategy.DPFedAvg`) is the preset that wires them together.
- `DistributedDP`: the distributed discrete Gaussian mechanism under secure aggregation: clients
  add integer noise before masking, and its accountant (Kairouz, Liu, Steinke 2021).
- `LocalDP` / `LocalDPClientFn`: each client clips and noises its own update;
  `LocalDPAccountant` records on the server what that costs each client.
- `with_central_dp(strategy, ...)`: any mean-aggregating strategy (FedAdam, FedProx, ...) as
  DP-FedAvg with that strategy's server optimizer; its parameters as keywords, or as one
  `CentralDPParams`.
- `epsilon`, `noise_multiplier_for`, `local_epsilon`, `local_noise_multiplier_for`,
  `default_delta`, `check_delta`: the privacy arithmetic, all of it computed by Google's
  `dp_accounting`.
- `SecureRandom`: the cryptographic randomness every privacy part draws from.
- `roost.privacy.planning`: the `roost privacy` questions as text reports.
- `roost.privacy.audit`: one-run auditing, a lower bound on ε from canaries (imported by name:
  it loads scipy); `roost privacy audit` runs it.
"""

from roost.privacy.accounting import (
    check_delta,
    default_delta,
    epsilon,
    local_epsilon,
    local_noise_multiplier_for,
    noise_multiplier_for,
)
from roost.privacy.central import CentralDP, CentralDPParams, SampledMean
from roost.privacy.distributed import DistributedDP
from roost.privacy.local import LocalDP, LocalDPAccountant, LocalDPClientFn
from roost.privacy.noise import SecureRandom
from roost.privacy.preset import DPFedAvg, dp_fedavg_parts, with_central_dp
from roost.privacy.sampling import FixedSizeSampler, PoissonSampler

__all__ = [
    "CentralDP",
    "CentralDPParams",
    "DPFedAvg",
    "DistributedDP",
    "FixedSizeSampler",
    "LocalDP",
    "LocalDPAccountant",
    "LocalDPClientFn",
    "PoissonSampler",
    "SampledMean",
    "SecureRandom",
    "check_delta",
    "default_delta",
    "dp_fedavg_parts",
    "epsilon",
    "local_epsilon",
    "local_noise_multiplier_for",
    "noise_multiplier_for",
    "with_central_dp",
]
