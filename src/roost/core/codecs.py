"""Update codecs: how a client's update (one flat float vector) is made small for the wire.

A `Codec` turns an update into a few plain arrays (packed codes, scales, indices, values: dtype,
shape and bytes like every array on the wire) and back:

- `q8`, `q4`, `q2`, `q1`: stochastic uniform quantization to that many bits per coordinate.
  The vector is cut into blocks (`blocks`); each block sends its range [lo, hi] as two float32
  and every coordinate one of the 2^b levels between them, rounded up or down at random with
  the probabilities that make the decoded value unbiased: E[decode(encode(x))] = x.
- `rot-q8` … `rot-q1`: the same after a randomized Hadamard rotation of each block
  (Suresh et al. 2017): random signs from the round's shared seed, then the orthonormal
  Walsh–Hadamard transform. It spreads a few large coordinates over the block, so the range
  each block quantizes is narrower and the error smaller; the server inverts it exactly.
- `topk:F`: the largest F·n coordinates by magnitude, as uint32 indices and float32 values;
  the client keeps what it did not send and adds it to its next update (error feedback,
  Stich et al. 2018), so nothing is lost, only delayed.
- `none`: the update as it is, in the model's float dtype (to measure the uncompressed cost
  through the same path).

Blocks are powers of two (`BLOCK` long, then the remainder's binary digits), so the rotation
needs no padding and a payload's size depends only on the codec and the model's size
(`payload_bytes`). Decoding checks every array's dtype and shape against what the codec and the
model's size imply, and every value, before anything is allocated from it: a malformed payload
raises `InvalidMessageError`.

Randomness here is for unbiased rounding and a shared rotation, not for protecting anyone: a
NumPy generator seeded per round and client, so a seeded run is reproducible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from roost.errors import ConfigurationError, InvalidMessageError

BLOCK = 1024
"""Largest block of coordinates quantized with one range (and rotated together)."""

QUANT_BITS = (1, 2, 4, 8)
_ROTATION_STREAM = 0x524F54  # the rotation's signs: a stream of the round seed of its own
_SPEC = re.compile(r"^(?:none|(rot-)?q([1248])|topk:([0-9.eE+-]+))$")
SPEC_FORMS = "none, q8, q4, q2, q1, rot-q8, rot-q4, rot-q2, rot-q1, topk:F (0 < F <= 1)"


@dataclass(frozen=True)
class Codec:
    """One compression setting. Build it from its name with `Codec.parse("rot-q4")`.

    Args:
        bits: bits per coordinate of stochastic quantization (None: not quantized).
        rotate: rotate each block (randomized Hadamard) before quantizing.
        fraction: share of coordinates top-k sends (None: all of them).
    """

    bits: int | None = None
    rotate: bool = False
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.bits is not None and self.bits not in QUANT_BITS:
            raise ConfigurationError(f"quantization bits must be one of {QUANT_BITS}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigurationError(f"topk:F needs 0 < F <= 1, got {self.fraction}")
        if self.rotate and self.bits is None:
            raise ConfigurationError("rotation goes with quantization: use rot-q8 ... rot-q1")
        if self.bits is not None and self.fraction is not None:
            raise ConfigurationError("choose quantization (qB) or top-k (topk:F), not both")

    @classmethod
    def parse(cls, spec: str) -> Codec:
        """The codec a name gives: one of `SPEC_FORMS`."""
        match = _SPEC.match(str(spec).strip())
        if match is None:
            raise ConfigurationError(f"unknown compression {spec!r}; use one of {SPEC_FORMS}")
        rotated, bits, fraction = match.groups()
        if fraction is not None:
            try:
                share = float(fraction)
            except ValueError:
                raise ConfigurationError(f"topk:F needs a number F, got {spec!r}") from None
            return cls(fraction=share)
        return cls(bits=None if bits is None else int(bits), rotate=bool(rotated))

    @property
    def name(self) -> str:
        """The codec's name, as `parse` reads it."""
        if self.fraction is not None:
            return f"topk:{self.fraction:g}"
        if self.bits is None:
            return "none"
        return f"{'rot-' if self.rotate else ''}q{self.bits}"

    @property
    def error_feedback(self) -> bool:
        """Whether the client carries what it did not send into its next update (top-k)."""
        return self.fraction is not None

    def payload_bytes(self, size: int, dtype: np.dtype | type = np.float64) -> int:
        """Bytes of the arrays that carry an update of `size` coordinates (`dtype`: the
        model's float dtype, which `none` sends)."""
        if self.fraction is not None:
            return top_k_count(size, self.fraction) * (4 + 4)
        if self.bits is None:
            return size * np.dtype(dtype).itemsize
        return _packed_length(size, self.bits) + block_count(size) * 2 * 4

    def encode(
        self, vector: np.ndarray, *, seed: int, rng: np.random.Generator, dtype: np.dtype
    ) -> list[np.ndarray]:
        """The arrays that carry `vector` (float64, flat). `seed` is the round's, shared with the
        server (the rotation); `rng` the client's own (the rounding)."""
        vector = np.asarray(vector, dtype=np.float64).ravel()
        if self.fraction is not None:
            return _top_k(vector, top_k_count(vector.size, self.fraction))
        if self.bits is None:
            return [vector.astype(dtype)]
        if self.rotate:
            vector = _rotate(vector, seed)
        return _quantize(vector, self.bits, rng)

    def decode(
        self, arrays: list[np.ndarray], *, size: int, seed: int, dtype: np.dtype
    ) -> np.ndarray:
        """The flat float64 update `arrays` carry; `InvalidMessageError` if they are not what
        this codec sends for `size` coordinates."""
        if self.fraction is not None:
            return _untop_k(arrays, size, top_k_count(size, self.fraction))
        if self.bits is None:
            (values,) = _expect(arrays, [(np.dtype(dtype), (size,))])
            return _finite(values.astype(np.float64), "the update")
        vector = _dequantize(arrays, size, self.bits)
        return _rotate(vector, seed, inverse=True) if self.rotate else vector


def top_k_count(size: int, fraction: float) -> int:
    """How many coordinates `topk:fraction` sends of `size` (at least 1)."""
    return min(size, max(1, math.ceil(fraction * size)))


def blocks(size: int) -> list[tuple[int, int]]:
    """`(length, count)` runs of blocks covering `size` coordinates in order: full `BLOCK`s,
    then one block per binary digit of the remainder, largest first (all powers of two)."""
    runs = [(BLOCK, size // BLOCK)] if size >= BLOCK else []
    remainder = size % BLOCK
    runs += [(1 << b, 1) for b in reversed(range(BLOCK.bit_length())) if remainder >> b & 1]
    return runs


def block_count(size: int) -> int:
    """How many blocks cover `size` coordinates (each sends one range when quantized)."""
    return sum(count for _, count in blocks(size))


def _block_lengths(size: int) -> np.ndarray:
    return np.concatenate([np.full(count, length) for length, count in blocks(size)] or [[0]])


def _expect(arrays: list[np.ndarray], layout: list[tuple[np.dtype, tuple[int, ...]]]) -> list:
    if len(arrays) != len(layout):
        raise InvalidMessageError(
            f"a compressed update has {len(layout)} arrays, got {len(arrays)}"
        )
    for index, (array, (dtype, shape)) in enumerate(zip(arrays, layout, strict=True)):
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
            got = f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
            raise InvalidMessageError(
                f"compressed array {index} must be {np.dtype(dtype)} of shape {shape}, got {got}"
            )
    return arrays


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise InvalidMessageError(f"{what} of a compressed update contains NaN or Inf")
    return values


# -- stochastic uniform quantization ----------------------------------------------------------


def _packed_length(size: int, bits: int) -> int:
    return -(-size * bits // 8)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes of `bits` bits each (uint8), packed 8 // bits to a byte, first in the low bits."""
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(padded.reshape(-1, per_byte) << shifts, axis=1).astype(np.uint8)


def _unpack(packed: np.ndarray, bits: int, size: int) -> np.ndarray:
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    mask = np.uint8((1 << bits) - 1)
    return ((packed[:, None] >> shifts) & mask).ravel()[:size]


def _ranges(vector: np.ndarray) -> np.ndarray:
    """Each block's [lo, hi] as float32, widened outward so the block lies inside it."""
    starts = np.concatenate([[0], np.cumsum(_block_lengths(vector.size))[:-1]])
    lo = np.minimum.reduceat(vector, starts)
    hi = np.maximum.reduceat(vector, starts)
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32 < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return np.stack([lo32, hi32], axis=1)


def _grid(scales: np.ndarray, size: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every coordinate's lowest level and level spacing (float64), from the blocks' ranges;
    both ends compute them the same way, so decoding sees the grid encoding used."""
    lengths = _block_lengths(size)
    lo = scales[:, 0].astype(np.float64)
    step = (scales[:, 1].astype(np.float64) - lo) / ((1 << bits) - 1)
    return np.repeat(lo, lengths), np.repeat(step, lengths)


def _quantize(vector: np.ndarray, bits: int, rng: np.random.Generator) -> list[np.ndarray]:
    scales = _ranges(vector)
    lo, step = _grid(scales, vector.size, bits)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(step > 0, (vector - lo) / step, 0.0)
    below = np.floor(position)
    # Up with probability (position − below): the expected level is `position` itself.
    levels = below + (rng.random(vector.size) < position - below)
    codes = np.clip(levels, 0, (1 << bits) - 1).astype(np.uint8)
    return [_pack(codes, bits), scales]


def _dequantize(arrays: list[np.ndarray], size: int, bits: int) -> np.ndarray:
    layout = [
        (np.dtype(np.uint8), (_packed_length(size, bits),)),
        (np.dtype(np.float32), (block_count(size), 2)),
    ]
    packed, scales = _expect(arrays, layout)
    _finite(scales, "the ranges")
    if (scales[:, 1] < scales[:, 0]).any():
        raise InvalidMessageError("a compressed update has a range whose top is below its bottom")
    lo, step = _grid(scales, size, bits)
    return lo + _unpack(packed, bits, size) * step


# -- randomized Hadamard rotation -------------------------------------------------------------


def _walsh_hadamard(rows: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh–Hadamard transform of each row (length a power of two)."""
    count, length = rows.shape
    out = rows.copy()
    half = 1
    while half < length:
        pairs = out.reshape(count, length // (2 * half), 2, half)
        out = np.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]), axis=2)
        half *= 2
    return out.reshape(count, length) / math.sqrt(length)


def _rotate(vector: np.ndarray, seed: int, *, inverse: bool = False) -> np.ndarray:
    """H·D·x per block (D: random signs from `seed`); `inverse`: D·H·y, its exact inverse."""
    signs = np.random.default_rng([seed, _ROTATION_STREAM]).integers(0, 2, vector.size) * 2 - 1
    source = vector if inverse else vector * signs
    out = np.empty_like(vector)
    start = 0
    for length, count in blocks(vector.size):
        stop = start + length * count
        out[start:stop] = _walsh_hadamard(source[start:stop].reshape(count, length)).ravel()
        start = stop
    return out * signs if inverse else out


# -- top-k sparsification ---------------------------------------------------------------------


def _top_k(vector: np.ndarray, count: int) -> list[np.ndarray]:
    chosen = np.sort(np.argpartition(np.abs(vector), vector.size - count)[vector.size - count :])
    return [chosen.astype(np.uint32), vector[chosen].astype(np.float32)]


def _untop_k(arrays: list[np.ndarray], size: int, count: int) -> np.ndarray:
    layout = [(np.dtype(np.uint32), (count,)), (np.dtype(np.float32), (count,))]
    indices, values = _expect(arrays, layout)
    if (np.diff(indices.astype(np.int64)) <= 0).any() or (count and int(indices[-1]) >= size):
        raise InvalidMessageError(
            f"top-k indices must be strictly increasing and below the model's size {size}"
        )
    vector = np.zeros(size)
    vector[indices] = _finite(values, "the values")
    return vector
