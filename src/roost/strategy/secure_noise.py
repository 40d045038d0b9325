"""Noise that clients add themselves under secure aggregation: the server's half of distributed DP.

A `SecureNoise` transform in a strategy's `update_transforms` (`roost.privacy.DistributedDP`)
turns `SecureAggregation` into the distributed discrete Gaussian mechanism: `NoisePlan` sizes the
field for the cohort's values and noise tails (`roost.secagg.ddp.NoiseField`), tells every client
the variance of its share of the noise in quantization levels, and decodes the unmasked, noised
sum. The transform then accounts for what the round released (`SecureNoise.noised`).

Calibration, in quantization levels of step s: the survivors' noise sum must have std
σ_total = z·C / s when `min_survivors` = n_min clients survive, so each client adds
N_Z(0, σ_total² / n_min); more survivors only add noise. Neighbouring cohorts differ by replacing
one client's update (both of L2 norm at most C after quantization), so the sum's L2 sensitivity
is 2C / s, as for central DP with a fixed-size cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from roost.errors import ConfigurationError
from roost.strategy.base import Chain, State, UpdateTransform

if TYPE_CHECKING:
    from roost.secagg import WeightedQuantizer
    from roost.secagg.ddp import NoiseField


class SecureNoise(UpdateTransform):
    """An update transform whose noise the clients add before secure aggregation masks.

    Subclasses provide `noise_multiplier` (z), `clip_norm` (C) and `min_survivors` (n_min), and
    `noised`, which records one released round.
    """

    noise_multiplier: float
    clip_norm: float
    min_survivors: int
    withholds_client_statistics = True

    def noised(
        self, state: State, variance: float, sensitivity: float, dimension: int, survivors: int
    ) -> State:
        """The state after a round whose `survivors` clients each added N_Z(0, `variance`) to
        `dimension` values, with L2 sensitivity `sensitivity` (all in quantization levels)."""
        raise NotImplementedError


@dataclass(frozen=True)
class NoisePlan:
    """One secure round's distributed noise: the field, the quantizer and each client's share."""

    field: NoiseField
    quantizer: WeightedQuantizer
    variance: float
    """σ_c²: every client's noise variance, in quantization levels."""
    sensitivity: float
    """2C / s: the noised sum's L2 sensitivity, in quantization levels."""
    min_survivors: int

    @classmethod
    def build(
        cls, noise: SecureNoise, clip_range: float, bits: int, cohort: int, size: int
    ) -> NoisePlan:
        """The plan for a cohort of `cohort` clients sending `size` values clipped to ±R."""
        from roost.secagg import SecAggConfigError, WeightedQuantizer
        from roost.secagg.ddp import NoiseField

        if cohort < noise.min_survivors:
            raise ConfigurationError(
                f"distributed DP needs at least min_survivors = {noise.min_survivors} clients a "
                f"round but the cohort has {cohort}; sample more clients or lower min_survivors"
            )
        total_std = noise.noise_multiplier * noise.clip_norm  # with n_min survivors
        ratio = total_std * math.sqrt(cohort / noise.min_survivors) / clip_range
        try:
            field = NoiseField(clip_range, cohort, bits, ratio, size)
            quantizer = WeightedQuantizer(clip_range, 1.0, field.max_clients, bits)
        except SecAggConfigError as error:
            raise ConfigurationError(str(error)) from None
        step = quantizer.values.step
        return cls(
            field,
            quantizer,
            (total_std / step) ** 2 / noise.min_survivors,
            2 * noise.clip_norm / step,
            noise.min_survivors,
        )

    def decode_mean(self, total: np.ndarray, survivors: int) -> np.ndarray:
        """The noised mean Σ(x_i + noise_i)/n of `survivors` inputs from their unmasked sum."""
        values = self.field.centered(np.asarray(total)[:-1])
        step = self.quantizer.values.step
        return (values * step - survivors * self.quantizer.values.clip) / survivors


def noise_member(transforms: UpdateTransform) -> tuple[int, SecureNoise] | None:
    """The one `SecureNoise` among a chain's members, with its index (None: none)."""
    members = list(transforms) if isinstance(transforms, Chain) else [transforms]
    found = [(i, t) for i, t in enumerate(members) if isinstance(t, SecureNoise)]
    if len(found) > 1:
        raise ConfigurationError("give one distributed DP transform, not several")
    return found[0] if found else None


def noised(
    transforms: UpdateTransform, state: State, plan: NoisePlan, size: int, survivors: int
) -> State:
    """The transforms' state with the noise member told what the round released."""
    found = noise_member(transforms)
    assert found is not None
    index, member = found
    noted = member.noised(
        state[index] if isinstance(transforms, Chain) else state,
        plan.variance,
        plan.sensitivity,
        size,
        survivors,
    )
    if not isinstance(transforms, Chain):
        return noted
    return (*state[:index], noted, *state[index + 1 :])
