"""Differential privacy for federated learning, as parts of the strategy chain.

- `CentralDP` (with `SampledMean`, `PoissonSampler`, `FixedSizeSampler`): DP-FedAvg's clipping
  and Gaussian noise on the server, with adaptive clipping and a privacy accountant in its state;
  `DPFedAvg` (also `roost.strategy.DPFedAvg`) is the preset that wires them together.
- `LocalDP` / `LocalDPClientFn`: each client clips and noises its own update.
- `epsilon`, `noise_multiplier_for`, `local_epsilon`, `default_delta`: the privacy arithmetic,
  all of it computed by Google's `dp_accounting`.
- `SecureRandom`: the cryptographic randomness every privacy part draws from.
- `roost.privacy.planning`: the `roost privacy` questions as text reports.
"""

from roost.privacy.accounting import default_delta, epsilon, local_epsilon, noise_multiplier_for
from roost.privacy.central import CentralDP, SampledMean
from roost.privacy.local import LocalDP, LocalDPClientFn
from roost.privacy.noise import SecureRandom
from roost.privacy.preset import DPFedAvg, dp_fedavg_parts
from roost.privacy.sampling import FixedSizeSampler, PoissonSampler

__all__ = [
    "CentralDP",
    "DPFedAvg",
    "FixedSizeSampler",
    "LocalDP",
    "LocalDPClientFn",
    "PoissonSampler",
    "SampledMean",
    "SecureRandom",
    "default_delta",
    "dp_fedavg_parts",
    "epsilon",
    "local_epsilon",
    "noise_multiplier_for",
]
