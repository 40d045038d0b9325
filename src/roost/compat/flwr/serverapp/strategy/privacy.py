"""Flower's central-DP wrappers with fixed clipping, as parts added to the wrapped strategy.

    strategy = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(fraction_train=0.2), noise_multiplier=1.0, clipping_norm=0.5, num_sampled_clients=20
    )
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)

Each round every update (a node's arrays minus the global ones) is clipped to L2 norm C, the
wrapped strategy aggregates them as it always does, and Gaussian noise of standard deviation
σ·C/m (σ the noise multiplier, m `num_sampled_clients`) is added to the aggregated update: Flower's
arithmetic. Two things differ, both on the side of privacy:

- The noise is drawn from roost's cryptographic source (`roost.privacy.noise`), not NumPy's, and it
  goes on the aggregated update before the wrapped strategy's server optimizer (FedAdam, FedAvgM,
  …) takes its step, so the optimizer only ever sees noised data. For FedAvg that is the same model.
- With client-side clipping, the server clips again: a node without `fixedclipping_mod` cannot send
  a larger update. An honest node's update is already within C, so this changes nothing for it.

Like Flower's, these wrappers report no ε: with updates weighted by example counts, one node can
move the aggregate by more than C/m, so no accountant could honestly say what σ buys. For a
reported ε, use roost's `DPFedAvg` (uniform weights, secret sampling, an accountant).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from roost.compat.flwr.clientapp.mod import CLIPPING_NORM_KEY
from roost.compat.flwr.records import ArrayRecord
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.base import Additions, FedAvg, Strategy
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.core.types import Parameters
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
        noised = [
            (np.asarray(array, np.float64) + source.normal(self.stddev, np.shape(array))).astype(
                np.asarray(array).dtype
            )
            if np.asarray(array).dtype.kind == "f"
            else array
            for array in aggregate
        ]
        return noised, state, {"noise_stddev": self.stddev}


class _FixedClippingWrapper(Strategy):
    """What both fixed-clipping wrappers share: their arguments, checks and `start`."""

    clipping_on_nodes = False

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
    ) -> None:
        if not isinstance(strategy, FedAvg):
            raise ConfigurationError(
                f"{type(self).__name__} wraps one of the named strategies (FedAvg, FedAdam, …); "
                f"got {type(strategy).__name__}"
            )
        _check_number("noise_multiplier", noise_multiplier, minimum=0.0, inclusive=True)
        _check_number("clipping_norm", clipping_norm, minimum=0.0, inclusive=False)
        if isinstance(num_sampled_clients, bool) or not isinstance(num_sampled_clients, int):
            raise ConfigurationError(
                f"num_sampled_clients must be an int >= 1, got {num_sampled_clients!r}"
            )
        if num_sampled_clients < 1:
            raise ConfigurationError(
                f"num_sampled_clients must be an int >= 1, got {num_sampled_clients}"
            )
        self.strategy = strategy
        self.noise_multiplier = float(noise_multiplier)
        self.clipping_norm = float(clipping_norm)
        self.num_sampled_clients = num_sampled_clients

    @property
    def noise_stddev(self) -> float:
        """σ·C/m, the standard deviation of the noise on the aggregated update."""
        return self.noise_multiplier * self.clipping_norm / self.num_sampled_clients

    def __repr__(self) -> str:
        where = "client" if self.clipping_on_nodes else "server"
        return (
            f"{type(self).__name__}({self.strategy!r}, noise_multiplier={self.noise_multiplier}, "
            f"clipping_norm={self.clipping_norm}, num_sampled_clients="
            f"{self.num_sampled_clients}) ({where}-side clipping)"
        )

    def summary(self) -> None:
        log.info("%s", self)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, **options: Any) -> Result:
        """Run the wrapped strategy with clipping and noise added (see the module's note)."""
        if self.noise_multiplier == 0:
            log.warning(
                "%s: noise_multiplier is 0, so no noise is added and no privacy is given",
                type(self).__name__,
            )
        log.info(
            "%s: updates clipped to %g, noise of std %.4g on each aggregate; no ε is reported "
            "(use roost's DPFedAvg for an accountant)",
            type(self).__name__,
            self.clipping_norm,
            self.noise_stddev,
        )
        additions = Additions(
            update_transforms=(ClipL2(self.clipping_norm), AggregateNoise(self.noise_stddev)),
            train_extras={CLIPPING_NORM_KEY: self.clipping_norm} if self.clipping_on_nodes else {},
        )
        return self.strategy.start_with(grid, initial_arrays, additions, **options)


class DifferentialPrivacyServerSideFixedClipping(_FixedClippingWrapper):
    """Central DP with fixed clipping on the server: Flower's wrapper of the same name.

    Args:
        strategy: the named strategy to make private (FedAvg, FedAdam, …).
        noise_multiplier: σ; the noise on each aggregated update has std σ·C/m.
        clipping_norm: C, the L2 bound of every node's update.
        num_sampled_clients: m, the nodes expected each round.
    """


class DifferentialPrivacyClientSideFixedClipping(_FixedClippingWrapper):
    """Central DP with fixed clipping on the nodes (`fixedclipping_mod`): Flower's wrapper of the
    same name. Every train config carries `"clipping_norm"`; the server clips too (a no-op for
    a node that ran the mod). Arguments as `DifferentialPrivacyServerSideFixedClipping`'s."""

    clipping_on_nodes = True


def _check_number(name: str, value: Any, *, minimum: float, inclusive: bool) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    above = number is not None and (number >= minimum if inclusive else number > minimum)
    if not above or not math.isfinite(number):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
