"""Shamir secret sharing of short byte strings over the prime field GF(2^521 − 1).

A secret of up to `MAX_SECRET_BYTES` bytes is one field element, so a 32-byte key needs one
polynomial, not a polynomial per chunk. A leading 0x01 byte is prepended before the conversion to
an integer so that secrets with leading zero bytes come back with their exact length.

Any `threshold` shares determine the secret; fewer reveal nothing about it, because the other
coefficients are uniform in the field (drawn from the OS CSPRNG via `secrets`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from roost.secagg.errors import ShamirError

# The Mersenne prime 2^521 − 1: large enough for a 64-byte secret plus its length marker.
PRIME = (1 << 521) - 1
SHARE_VALUE_BYTES = 66  # ceil(521 / 8)
MAX_SECRET_BYTES = 64
MAX_SHARE_ID = (1 << 31) - 1  # ids travel as int64 on the wire; keep them small and positive
_MARKER = b"\x01"


@dataclass(frozen=True)
class Share:
    """One point (index, value) of the sharing polynomial; `index` is the holder's id."""

    index: int
    value: int

    def value_bytes(self) -> bytes:
        """The value as `SHARE_VALUE_BYTES` big-endian bytes, for encryption or the wire."""
        return self.value.to_bytes(SHARE_VALUE_BYTES, "big")

    @classmethod
    def from_bytes(cls, index: int, data: bytes) -> Share:
        """Parse a value written by `value_bytes`; refuse a wrong length or a non-field value."""
        if len(data) != SHARE_VALUE_BYTES:
            raise ShamirError(f"a share value has {SHARE_VALUE_BYTES} bytes, got {len(data)}")
        value = int.from_bytes(data, "big")
        if value >= PRIME:
            raise ShamirError("share value is not an element of the field (>= 2^521 − 1)")
        return cls(_check_id(index), value)


def split(secret: bytes, threshold: int, share_ids: Sequence[int]) -> list[Share]:
    """Share `secret` so that any `threshold` of the returned shares (one per id) recover it.

    `share_ids` are distinct positive integers, usually the holders' node ids; there must be at
    least `threshold` of them, and `threshold` must be at least 2 (one share would be the secret).
    """
    if not isinstance(secret, bytes) or len(secret) > MAX_SECRET_BYTES:
        raise ShamirError(f"the secret must be bytes of length <= {MAX_SECRET_BYTES}")
    ids = _check_ids(share_ids)
    _check_threshold(threshold)
    if threshold > len(ids):
        raise ShamirError(
            f"threshold {threshold} is more than the {len(ids)} share ids; no one could "
            "reconstruct the secret"
        )
    coefficients = [int.from_bytes(_MARKER + secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in ids]


def reconstruct(shares: Iterable[Share], threshold: int) -> bytes:
    """Recover the secret from at least `threshold` shares (the first `threshold` are used).

    Fewer shares would give a wrong value without any error, so they are refused. Shares from a
    different sharing are not detected here; callers that can check the result (against a public
    key or a commitment) should do so, as the secure-aggregation server does.
    """
    _check_threshold(threshold)
    chosen = list(shares)[:threshold]
    if len(chosen) < threshold:
        raise ShamirError(f"need {threshold} shares to reconstruct, got {len(chosen)}")
    value = interpolate(chosen, 0)
    encoded = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if not encoded.startswith(_MARKER) or len(encoded) > MAX_SECRET_BYTES + 1:
        raise ShamirError("the shares do not belong to one sharing of a secret")
    return encoded[1:]


def interpolate(shares: Sequence[Share], x: int) -> int:
    """Value at `x` of the unique polynomial of degree < len(shares) through `shares`."""
    _check_ids([share.index for share in shares])
    total = 0
    for i, share_i in enumerate(shares):
        numerator, denominator = 1, 1
        for j, share_j in enumerate(shares):
            if i != j:
                numerator = numerator * (x - share_j.index) % PRIME
                denominator = denominator * (share_i.index - share_j.index) % PRIME
        total += share_i.value * numerator * pow(denominator, -1, PRIME)
    return total % PRIME


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):  # Horner's rule
        result = (result * x + coefficient) % PRIME
    return result


def _check_threshold(threshold: object) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
        raise ShamirError(f"threshold must be an int >= 2, got {threshold!r}")


def _check_ids(share_ids: Iterable[int]) -> list[int]:
    ids = [_check_id(x) for x in share_ids]
    if len(set(ids)) != len(ids):
        raise ShamirError(f"share ids must be distinct, got {sorted(ids)}")
    return ids


def _check_id(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_SHARE_ID:
        raise ShamirError(
            f"share ids must be ints in [1, {MAX_SHARE_ID}] (0 would hand out the secret), "
            f"got {x!r}"
        )
    return x
