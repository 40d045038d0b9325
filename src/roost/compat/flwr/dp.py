"""The parts behind Flower's central-DP wrappers with fixed clipping, for both strategy APIs.

`DifferentialPrivacyServerSideFixedClipping` (in `flwr.serverapp.strategy` and, the older form,
`flwr.server.strategy`) and `DifferentialPrivacyClientSideFixedClipping` add two update transforms
to the strategy they wrap: `ClipL2(C)` on every node's update, then `AggregateNoise(σ·C/m)` on the
aggregated update. That is Flower's arithmetic, with two differences, both on the side of privacy:

- The noise is drawn from roost's cryptographic source (`roost.privacy.noise`), not NumPy's, and it
  goes on the aggregated update before the wrapped strategy's server optimizer (FedAdam, FedAvgM,
  …) takes its step, so the optimizer only ever sees noised data. For FedAvg that is the same model.
- With client-side clipping the server clips too: a node without `fixedclipping_mod` cannot send a
  larger update. An honest node's update is already within C, so this changes nothing for it.

Like Flower's, these wrappers report no ε: with updates weighted by example counts, one node can
move the aggregate by more than C/m, so no accountant could honestly say what σ buys. For a
reported ε, use roost's `DPFedAvg` (uniform weights, secret sampling, an accountant).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from roost.core.checks import check_number
from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError
from roost.privacy.noise import noise_source
from roost.strategy.base import Measurements, State, UpdateTransform
from roost.strategy.transforms import ClipL2

log = logging.getLogger("roost")


@dataclass(frozen=True)
class AggregateNoise(UpdateTransform):
    """Add Gaussian noise of standard deviation `stddev` to every float array of the round's
    aggregated update, from a fresh cryptographic source each round."""

    stddev: float

    def finish(
        self, aggregate: Parameters | None, state: State
    ) -> tuple[Parameters | None, State, Measurements]:
        if aggregate is None or self.stddev == 0:
            return aggregate, state, {}
        source = noise_source(None, "AggregateNoise")
        noised = []
        for array in aggregate:
            array = np.asarray(array)
            if array.dtype.kind == "f":
                array = (array.astype(np.float64) + source.normal(self.stddev, array.shape)).astype(
                    array.dtype
                )
            noised.append(array)
        return noised, state, {"noise_stddev": self.stddev}

    def client_side(self, state: State) -> Config:
        """Nothing for clients to do: the noise goes on the aggregate, which secure aggregation
        reveals to the server (Flower's DP wrappers with SecAgg+, as in its fl-dp-sa example)."""
        return {}


@dataclass(frozen=True)
class FixedClippingDP:
    """A fixed-clipping wrapper's arguments, checked: σ, C and m (`num_sampled_clients`)."""

    noise_multiplier: float
    clipping_norm: float
    num_sampled_clients: int

    def __post_init__(self) -> None:
        check_number("noise_multiplier", self.noise_multiplier, allow_zero=True)
        check_number("clipping_norm", self.clipping_norm)
        count = self.num_sampled_clients
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"num_sampled_clients must be an int >= 1, got {count!r}")

    @property
    def noise_stddev(self) -> float:
        """σ·C/m, the standard deviation of the noise on the aggregated update."""
        return self.noise_multiplier * self.clipping_norm / self.num_sampled_clients

    def transforms(self, wrapper: str) -> tuple[UpdateTransform, ...]:
        """The parts the wrapper named `wrapper` adds, after saying in the log what they do."""
        if self.noise_multiplier == 0:
            log.warning("%s: noise_multiplier is 0, so no noise is added: no privacy", wrapper)
        log.info(
            "%s: updates clipped to %g, noise of std %.4g on each aggregate; no ε is reported "
            "(use roost's DPFedAvg for an accountant)",
            wrapper,
            self.clipping_norm,
            self.noise_stddev,
        )
        return ClipL2(float(self.clipping_norm)), AggregateNoise(self.noise_stddev)
