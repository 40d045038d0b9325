"""Randomness that protects people: uniform and Gaussian samples from a cryptographic keystream.

`numpy.random` is a fine simulator but a poor guardian: its generators are predictable from a few
outputs, and a seed stored in a checkpoint would let anyone holding it subtract the noise again.
`SecureRandom` instead reads an AES-256-CTR keystream (from the `cryptography` package) keyed with
32 bytes from `os.urandom`, and turns it into

- uniform floats in [0, 1) with 53 random bits each (the full precision of a float64), and
- standard Gaussian samples by the Box–Muller transform on pairs of those uniforms,

both vectorised with NumPy. A source is made fresh for every use (one per round, one per client
release) and keeps its key only inside the cipher object, never in anything saved.

Research runs may pass a `seed`: each source's key is then derived from (seed, context) with
HKDF-SHA256, so a run, and a run resumed from a checkpoint, draws exactly the same noise without
the key ever being written down. Such a run is NOT private (the seed reproduces the noise), and
every seeded source says so in a warning.

Known limit: the samples are floating-point numbers, and floating-point Gaussian samplers can leak
through the low-order bits of their outputs (Mironov, CCS 2012, shows this for Laplace noise).
Releasing only the noised model after rounding in float32, as roost does, narrows but does not
remove that gap.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.errors import ConfigurationError

log = logging.getLogger(__name__)

KEY_BYTES = 32
"""AES-256 keys."""

_SALT = b"roost research seed: this noise is reproducible and NOT private"
_UNIT = 2.0**-53  # one step between consecutive 53-bit uniforms
_BLOCK = 1 << 20  # samples drawn per keystream request: bounds the temporary memory

Context = int | str


def derive_key(seed: int, *context: Context) -> bytes:
    """A 32-byte key from a research seed and a context (e.g. ("central", round)), by HKDF-SHA256.

    Different contexts give independent keys; the same (seed, context) always gives the same key.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigurationError(f"a research seed must be an int, got {seed!r}")
    for part in context:
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise ConfigurationError(f"a seed context holds ints and strs, got {part!r}")
    info = json.dumps([*context], separators=(",", ":")).encode()
    kdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=info)
    return kdf.derive(str(seed).encode())


def warn_not_private(owner: str, seed: int) -> None:
    """Log that `owner` was given a research seed, so its noise can be reproduced by anyone."""
    log.warning(
        "%s uses the research seed %d: its noise is reproducible and the run is NOT private; "
        "leave seed=None for a real deployment",
        owner,
        seed,
    )


class SecureRandom:
    """Uniform and Gaussian samples from an AES-256-CTR keystream.

    Args:
        key: 32 bytes; None (the default) takes them from `os.urandom`. The key lives only in the
            cipher: it is not an attribute and nothing here can write it out.

    Use `SecureRandom.from_seed(seed, *context)` for reproducible research runs (not private).
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(KEY_BYTES)
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigurationError(f"a SecureRandom key must be {KEY_BYTES} bytes")
        # A fresh key per source, so the all-zero initial counter block never repeats under a key.
        self._keystream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    @classmethod
    def from_seed(cls, seed: int, *context: Context) -> SecureRandom:
        """A reproducible source for research: the key is derived from (seed, context).

        Logs a warning: noise drawn from a seeded source protects nobody.
        """
        warn_not_private("SecureRandom.from_seed", seed)
        return cls(derive_key(seed, *context))

    def __repr__(self) -> str:
        return "SecureRandom(<key hidden>)"

    def random_bytes(self, count: int) -> bytes:
        """The next `count` bytes of the keystream."""
        return self._keystream.update(bytes(count))

    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        """Uniform float64 samples in [0, 1), each with 53 random bits."""
        shape = _shape(size)
        count = int(np.prod(shape, dtype=np.int64))
        out = np.empty(count, np.float64)
        for start in range(0, count, _BLOCK):
            stop = min(start + _BLOCK, count)
            words = np.frombuffer(self.random_bytes(8 * (stop - start)), dtype="<u8")
            np.multiply(words >> np.uint64(11), _UNIT, out=out[start:stop])
        return out.reshape(shape)

    def standard_normal(self, size: int | tuple[int, ...]) -> np.ndarray:
        """Standard Gaussian float64 samples (Box–Muller on pairs of 53-bit uniforms)."""
        shape = _shape(size)
        count = int(np.prod(shape, dtype=np.int64))
        out = np.empty(count + count % 2, np.float64)
        for start in range(0, out.size, 2 * _BLOCK):  # block by block: a model-sized temporary
            pairs = min(_BLOCK, (out.size - start) // 2)
            uniforms = self.random(2 * pairs)
            # 1 − u lies in (0, 1], so the logarithm is finite.
            radius = np.sqrt(-2.0 * np.log1p(-uniforms[:pairs]))
            angle = (2.0 * np.pi) * uniforms[pairs:]
            np.multiply(radius, np.cos(angle), out=out[start : start + pairs])
            np.multiply(radius, np.sin(angle), out=out[start + pairs : start + 2 * pairs])
        return out[:count].reshape(shape)

    def normal(self, std: float, size: int | tuple[int, ...]) -> np.ndarray:
        """Gaussian float64 samples with mean 0 and standard deviation `std` (>= 0)."""
        if not std >= 0:
            raise ConfigurationError(f"a noise standard deviation must be >= 0, got {std}")
        return std * self.standard_normal(size)

    def bernoulli(self, probability: float, size: int) -> np.ndarray:
        """`size` independent booleans, each True with `probability`."""
        if not 0.0 <= probability <= 1.0:
            raise ConfigurationError(f"a probability must be in [0, 1], got {probability}")
        return self.random(size) < probability

    def sample_without_replacement(self, population: int, count: int) -> np.ndarray:
        """`count` distinct indices of range(population), uniformly at random, in increasing order.

        Sorting uniform keys gives a uniformly random permutation (ties among 53-bit keys have
        negligible probability); its first `count` entries are a uniform subset.
        """
        if not 0 <= count <= population:
            raise ConfigurationError(
                f"cannot choose {count} distinct items out of {population}; "
                "lower the cohort size or add clients"
            )
        keys = self.random(population)
        return np.sort(np.argsort(keys, kind="stable")[:count])


def noise_source(seed: int | None, *context: Context) -> SecureRandom:
    """A fresh source: keyed by `os.urandom` when `seed` is None, else derived from (seed, context).

    The part that accepted the seed warns once that the run is not private; this does not repeat
    the warning for every round.
    """
    if seed is None:
        return SecureRandom()
    return SecureRandom(derive_key(seed, *context))


def _shape(size: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
    if any(int(n) < 0 for n in shape):
        raise ConfigurationError(f"a sample shape cannot be negative, got {size}")
    return tuple(int(n) for n in shape)
