"""Fixed-point encoding of float vectors into integers mod 2^k whose sum can be decoded.

How k, R and n relate. With `bits` = k, clip range R and at most n clients in a sum, every client
maps a value x to s = (clip(x, −R, R) + R) · Q / (2R) in [0, Q], where

    Q = min(floor((2^k − 1) / n), 2^53)

is the top level, and rounds s stochastically: q = floor(s) + 1 with probability s − floor(s),
else floor(s). Each q is in {0, …, Q}, so the sum of up to n of them is at most n·Q <= 2^k − 1
and the modular sum computed under the masks is the exact integer sum: nothing wraps. A
configuration with Q < 1 (n >= 2^k) would wrap and is refused.

Why Q stops at 2^53. The scaling and rounding run in float64, whose integers are exact only up
to 2^53; above it s rounds to neighbouring levels, the top value lands on Q + 1, and a sum of n
top values wraps (with 62 bits and 2 clients, +1 + +1 decoded as −2). Levels finer than 2^-53 of
the range also carry nothing a float64 input has. So widths above 53 bits add room for more
clients (n·Q <= 2^k − 1 still holds) rather than finer levels, and every step stays exact.

Error bound. Let e_i = q_i − s_i. Stochastic rounding is unbiased, E[e_i] = 0, and |e_i| < 1,
with the e_i independent across clients (each draws from the OS CSPRNG). Decoding c <= n clients,

    mean_hat − mean(clip(x)) = (2R / Q) · (1/c) · Σ e_i,

so per coordinate the error is always below 2R/Q (about 2R·n / 2^k), its standard deviation is at
most R / (Q·sqrt(c)), and by Hoeffding's inequality it is below (2R/Q)·sqrt(ln(2/δ) / (2c)) with
probability at least 1 − δ. Values outside [−R, R] are clipped first; that bias is not counted.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from roost.secagg.errors import QuantizationError, SecAggConfigError

MIN_BITS, MAX_BITS = 2, 64
MAX_LEVEL = 1 << 53
"""The largest top level Q: float64 represents every integer up to it exactly."""


@dataclass(frozen=True)
class Quantizer:
    """Encode values in [−clip, clip] as integers in {0, …, max_level} for sums of `max_clients`.

    `bits` is k, the modulus of the masked sum is 2^k; `max_level` = floor((2^k − 1)/max_clients),
    at most 2^53 (see the module doc).
    """

    clip: float
    max_clients: int
    bits: int = 32

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, MIN_BITS, MAX_BITS)
        _check_int("max_clients", self.max_clients, 1, None)
        if not (isinstance(self.clip, int | float) and math.isfinite(self.clip) and self.clip > 0):
            raise SecAggConfigError(f"clip must be a positive finite number, got {self.clip!r}")
        if self.max_level < 1:
            raise SecAggConfigError(
                f"{self.max_clients} clients cannot share a {self.bits}-bit sum without it "
                f"wrapping around; use more bits (at least {self.max_clients.bit_length()}) or "
                "fewer clients per round"
            )

    @property
    def modulus(self) -> int:
        """2^bits: masked vectors and their sums live in Z / 2^bits."""
        return 1 << self.bits

    @property
    def max_level(self) -> int:
        """Q: the largest integer one client sends, so that `max_clients` of them cannot wrap;
        at most `MAX_LEVEL`, so that float64 rounding to it is exact."""
        return min((self.modulus - 1) // self.max_clients, MAX_LEVEL)

    @property
    def step(self) -> float:
        """Width of one quantization level in the units of the values: 2R / Q."""
        return 2 * self.clip / self.max_level

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Clip, scale and stochastically round `values` to a flat uint64 vector in [0, Q]."""
        array = np.asarray(values)
        if array.dtype.kind not in "iuf":
            raise QuantizationError(f"can only quantize int or float values, got {array.dtype}")
        flat = array.astype(np.float64).ravel()
        if not np.isfinite(flat).all():
            raise QuantizationError("cannot quantize NaN or Inf values")
        scaled = (np.clip(flat, -self.clip, self.clip) + self.clip) / self.step
        # Float rounding can push an end point just past [0, Q]; pin it back.
        scaled = np.clip(scaled, 0.0, float(self.max_level))
        lower = np.floor(scaled)
        rounded_up = uniform_floats(flat.size) < (scaled - lower)
        return lower.astype(np.uint64) + rounded_up.astype(np.uint64)

    def dequantize_sum(self, total: np.ndarray, num_clients: int) -> np.ndarray:
        """Decode the integer sum of `num_clients` quantized vectors into the sum of the values."""
        _check_int("num_clients", num_clients, 1, self.max_clients)
        integers = np.asarray(total)
        if integers.dtype != np.uint64:
            raise QuantizationError(f"a quantized sum is a uint64 vector, got {integers.dtype}")
        if integers.size and int(integers.max()) > num_clients * self.max_level:
            raise QuantizationError(
                f"the sum exceeds {num_clients} × the top level {self.max_level}: it was not "
                f"made by {num_clients} clients with this quantizer"
            )
        return integers.astype(np.float64) * self.step - num_clients * self.clip

    def dequantize_mean(self, total: np.ndarray, num_clients: int) -> np.ndarray:
        """Decode the integer sum of `num_clients` quantized vectors into their mean."""
        return self.dequantize_sum(total, num_clients) / num_clients

    def mean_error_bound(self, num_clients: int, failure_probability: float | None = None) -> float:
        """Largest per-coordinate error of `dequantize_mean` vs the mean of the clipped values.

        Without `failure_probability` the bound always holds (2R/Q); with δ it is Hoeffding's
        (2R/Q)·sqrt(ln(2/δ)/(2c)), which holds for each coordinate with probability >= 1 − δ.
        """
        _check_int("num_clients", num_clients, 1, self.max_clients)
        if failure_probability is None:
            return self.step
        if not 0 < failure_probability < 1:
            raise SecAggConfigError("failure_probability must be in (0, 1)")
        hoeffding = math.sqrt(math.log(2 / failure_probability) / (2 * num_clients))
        return self.step * min(1.0, hoeffding)


@dataclass(frozen=True)
class WeightedQuantizer:
    """Encode (w·x, w) for a weighted mean Σ w·x / Σ w that the server divides after unmasking.

    Each client sends one vector of length d + 1: w·clip(x) quantized with clip range
    `max_weight`·R, followed by w quantized with clip range `max_weight`. Both parts are masked
    together, so the server learns only the two sums.
    """

    clip: float
    max_weight: float
    max_clients: int
    bits: int = 32

    def __post_init__(self) -> None:
        if not (
            isinstance(self.max_weight, int | float)
            and math.isfinite(self.max_weight)
            and self.max_weight > 0
        ):
            raise SecAggConfigError(
                f"max_weight must be positive and finite, got {self.max_weight}"
            )
        # Build both parts once now so that a bad clip, bits or max_clients fails here.
        _ = self.values, self.weights

    @property
    def values(self) -> Quantizer:
        """The quantizer of the weighted values w·x."""
        return Quantizer(self.clip * self.max_weight, self.max_clients, self.bits)

    @property
    def weights(self) -> Quantizer:
        """The quantizer of the weight w."""
        return Quantizer(self.max_weight, self.max_clients, self.bits)

    def encode(self, values: np.ndarray, weight: float) -> np.ndarray:
        """The uint64 vector [quantized w·clip(x) …, quantized w] of length values.size + 1."""
        if isinstance(weight, bool) or not (
            isinstance(weight, numbers.Real) and 0 <= weight <= self.max_weight
        ):
            raise QuantizationError(
                f"weight must be a number in [0, {self.max_weight}], got {weight!r}; raise "
                "max_weight or normalise the weights"
            )
        clipped = np.clip(np.asarray(values, dtype=np.float64).ravel(), -self.clip, self.clip)
        weighted = self.values.quantize(weight * clipped)
        return np.concatenate([weighted, self.weights.quantize(np.array([float(weight)]))])

    def decode_mean(self, total: np.ndarray, num_clients: int) -> tuple[np.ndarray, float]:
        """(Σ w·x / Σ w, Σ w) from the unmasked integer sum of `num_clients` encoded vectors."""
        integers = np.asarray(total)
        if integers.ndim != 1 or integers.size < 1:
            raise QuantizationError("a weighted sum is a 1-D vector ending with the weight")
        weighted_sum = self.values.dequantize_sum(integers[:-1], num_clients)
        total_weight = float(self.weights.dequantize_sum(integers[-1:], num_clients)[0])
        if total_weight <= num_clients * self.weights.step:
            raise QuantizationError(
                f"the decoded total weight {total_weight:.3g} is indistinguishable from zero at "
                "this resolution; a weighted mean needs a positive total weight"
            )
        return weighted_sum / total_weight, total_weight

    def rounding_norm(self, size: int) -> float:
        """The most rounding can add to the L2 norm of one client's decoded w·x of `size`
        values: √size · the step of the values (each coordinate moves by less than one step).

        A client that must keep its contribution within an L2 bound C (central DP's
        sensitivity) clips w·x to C − this first, so that no rounding can push it past C.
        """
        _check_int("size", size, 0, None)
        return math.sqrt(size) * self.values.step

    def mean_error_bound(self, num_clients: int, total_weight: float) -> float:
        """Worst-case per-coordinate error of the decoded weighted mean (|x| <= R).

        With A = Σ w·x, B = Σ w and errors ΔA, ΔB of their sums, Â/B̂ − A/B = (ΔA − (A/B)·ΔB)/B̂,
        and |ΔA| < c·2WR/Q, |ΔB| < c·2W/Q, |A/B| <= R, so the error is below c·4WR / (Q·B̂).
        """
        _check_int("num_clients", num_clients, 1, self.max_clients)
        if total_weight <= 0:
            raise QuantizationError("total_weight must be positive")
        return num_clients * 2 * self.values.step / total_weight


def uniform_floats(count: int) -> np.ndarray:
    """`count` independent uniform floats in [0, 1) with 53 random bits each, from os.urandom."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        upper = "" if high is None else f", at most {high}"
        raise SecAggConfigError(f"{name} must be an int >= {low}{upper}, got {value!r}")
