"""Distributed discrete Gaussian noise under SecAgg+: the sampler, the field and the bound.

Kairouz, Liu and Steinke (ICML 2021), "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation": every client adds integer noise N_Z(0, σ_c²) to each coordinate
of its clipped, quantized update before masking, so the server unmasks only a noised sum and no
party ever sees the sum without noise.

Sampler. `discrete_gaussian` follows Canonne, Kamath and Steinke (NeurIPS 2020, Algorithm 3):
draw a discrete Laplace Y of scale t = floor(σ) + 1, keep it with probability
exp(−(|Y| − σ²/t)² / (2σ²)), else draw again. Every coin is a comparison of a 53-bit uniform
from `os.urandom` with a float64 probability, vectorised over the coordinates; the exact
rational-arithmetic coins of the paper would cost a Python loop per value. The deviation is at
most 2^-53 per coin.

Field. The unmasked sum is Σ q_i + Σ noise_i modulo 2^k, with each q_i in [0, Q]. `NoiseField`
leaves `headroom`·Q of the 2^k values free and decodes the sum as the representative in
[−headroom·Q/2, n·Q + headroom·Q/2]: a noise sum within ±headroom·Q/2 never wraps. The headroom
covers the noise's sub-Gaussian tail: every coordinate of the survivors' noise sum stays within
the bound except with probability `WRAP_PROBABILITY` per round (a discrete Gaussian is
σ-sub-Gaussian, Canonne et al. Proposition 16, and so is a sum of them with the summed variance).

Bound. `zcdp_epsilon` is Theorem 1 of Kairouz et al. in closed form: with n clients each adding
N_Z(0, σ_c²) to d coordinates, and neighbouring sums that differ by at most Δ₂ in L2 norm, the sum
is ½ε²-concentrated DP for

    ε = min( sqrt(Δ₂² / (nσ_c²) + ½·τ·d),  Δ₂ / (√n·σ_c) + τ·√d ),
    τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ_c² · k / (k + 1)).
"""

from __future__ import annotations

import math
import os

import numpy as np

from roost.secagg.errors import SecAggConfigError
from roost.secagg.quantize import MAX_LEVEL, Quantizer

WRAP_PROBABILITY = 2.0**-40
"""Per round, the chance that some coordinate of the noise sum leaves the field's headroom."""


def _uniform(count: int) -> np.ndarray:
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _uniform_below(bound: int, count: int) -> np.ndarray:
    """`count` uniform integers in [0, bound) (bound < 2^53), by rejection: no modulo bias."""
    out = np.empty(0, np.int64)
    while out.size < count:
        draw = np.floor(_uniform(2 * (count - out.size) + 8) * 2.0**53).astype(np.int64)
        limit = (2**53 // bound) * bound
        out = np.concatenate([out, draw[draw < limit] % bound])
    return out[:count]


def _geometric(probability_stop: float, count: int) -> np.ndarray:
    """Failures before the first success of a coin with P(success) = `probability_stop`."""
    out = np.zeros(count, np.int64)
    going = np.ones(count, bool)
    while going.any():
        index = np.flatnonzero(going)
        stop = _uniform(index.size) < probability_stop
        out[index[~stop]] += 1
        going[index[stop]] = False
    return out


def discrete_laplace(scale: int, count: int) -> np.ndarray:
    """`count` samples with P(Y = y) ∝ exp(−|y| / scale) (Canonne et al. Algorithm 2)."""
    out = np.empty(0, np.int64)
    while out.size < count:
        wanted = 2 * (count - out.size) + 8
        low = _uniform_below(scale, wanted)
        keep = _uniform(wanted) < np.exp(-low / scale)
        low = low[keep]
        magnitude = low + scale * _geometric(1 - math.exp(-1.0), low.size)
        negative = _uniform(low.size) < 0.5
        valid = ~(negative & (magnitude == 0))  # zero would otherwise count twice
        out = np.concatenate([out, np.where(negative, -magnitude, magnitude)[valid]])
    return out[:count]


def discrete_gaussian(variance: float, count: int) -> np.ndarray:
    """`count` samples of N_Z(0, σ²): P(Y = y) ∝ exp(−y² / (2σ²)) on the integers, from
    os.urandom (Canonne et al. Algorithm 3; see the module doc on the coins)."""
    if not (math.isfinite(variance) and variance > 0):
        raise SecAggConfigError(f"a discrete Gaussian needs a finite variance > 0, got {variance}")
    sigma = math.sqrt(variance)
    scale = math.floor(sigma) + 1
    if scale >= 2**53:
        raise SecAggConfigError(f"σ = {sigma:.3g} is beyond float64's exact integers")
    out = np.empty(0, np.int64)
    while out.size < count:
        wanted = 2 * (count - out.size) + 8
        candidate = discrete_laplace(scale, wanted)
        gap = np.abs(candidate) - variance / scale
        keep = _uniform(wanted) < np.exp(-(gap**2) / (2 * variance))
        out = np.concatenate([out, candidate[keep]])
    return out[:count]


def add_noise(encoded: np.ndarray, variance: float, bits: int, noised: int) -> np.ndarray:
    """`encoded` (uint64, values mod 2^bits) with N_Z(0, variance) added to its first `noised`
    values, modulo 2^bits (the rest, the weight, stays exact)."""
    out = np.array(encoded, dtype=np.uint64, copy=True)
    noise = discrete_gaussian(variance, noised)
    # Two's-complement addition in uint64 wraps modulo 2^64; the mask keeps it modulo 2^bits.
    out[:noised] = (out[:noised] + noise.astype(np.uint64)) & np.uint64((1 << bits) - 1)
    return out


def tail_bound(std: float, dimension: int) -> float:
    """T with P(some of `dimension` coordinates of a σ-sub-Gaussian sum exceeds T) <=
    `WRAP_PROBABILITY`: 2·d·exp(−T²/(2σ²)) <= p."""
    return std * math.sqrt(2 * math.log(2 * max(dimension, 1) / WRAP_PROBABILITY))


def zcdp_epsilon(l2_sensitivity: float, clients: int, variance: float, dimension: int) -> float:
    """ε of Kairouz et al.'s Theorem 1: the sum of `clients` clients' N_Z(0, variance) noise on
    `dimension` coordinates is ½ε²-concentrated DP for changes of L2 norm `l2_sensitivity`."""
    if clients < 1 or variance <= 0 or dimension < 1:
        raise SecAggConfigError("zcdp_epsilon needs clients >= 1, variance > 0, dimension >= 1")
    tau = 10 * sum(math.exp(-2 * math.pi**2 * variance * k / (k + 1)) for k in range(1, clients))
    first = math.sqrt(l2_sensitivity**2 / (clients * variance) + 0.5 * tau * dimension)
    second = l2_sensitivity / math.sqrt(clients * variance) + tau * math.sqrt(dimension)
    return min(first, second)


class NoiseField:
    """The quantizer's field sized for `cohort` clients' values plus their noise sum's tail.

    Args:
        clip: R, the range of every (uniformly weighted) value.
        cohort: n, the clients whose inputs and noise may be summed.
        bits: k, the field is Z / 2^k.
        noise_ratio: σ_total / R, the noise sum's std in the units of the values, over R
            (σ_total = z·C).
        dimension: d, the noised coordinates.

    Raises SecAggConfigError (one line, what to change) when no level fits.
    """

    def __init__(
        self, clip: float, cohort: int, bits: int, noise_ratio: float, dimension: int
    ) -> None:
        # Q levels span 2R, so σ_total is noise_ratio·Q/2 levels and its tail T this many Q's:
        tail_in_q = tail_bound(noise_ratio / 2, dimension)
        self.headroom = 2 * math.ceil(tail_in_q) + 2
        max_clients = cohort + self.headroom
        # An even Q puts the zero update on an integer level (Q/2): it quantizes exactly.
        while _max_level(max_clients, bits) % 2:
            max_clients += 1
        if max_clients >= 1 << bits:
            raise SecAggConfigError(
                f"{bits}-bit arithmetic leaves no room for {cohort} clients' values and noise "
                "tails; raise --secagg-bits (or lower the noise multiplier)"
            )
        self.cohort = cohort
        self.bits = bits
        self.quantizer = Quantizer(clip, max_clients, bits)

    @property
    def max_clients(self) -> int:
        """n + headroom: the quantizer's max_clients."""
        return self.quantizer.max_clients

    def centered(self, total: np.ndarray) -> np.ndarray:
        """The integer sums (int64 as float64) the unmasked values mod 2^k stand for."""
        half = (self.headroom * self.quantizer.max_level) // 2
        # bits <= 62 (SecureAggregation's limit): total + half stays below 2^63, no uint64 wrap.
        shifted = (np.asarray(total, np.uint64) + np.uint64(half)) & np.uint64((1 << self.bits) - 1)
        return shifted.astype(np.int64).astype(np.float64) - half


def _max_level(max_clients: int, bits: int) -> int:
    return min(((1 << bits) - 1) // max_clients, MAX_LEVEL)
