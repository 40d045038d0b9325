"""Shamir secret sharing: round trips from any t shares, and clear refusals of bad input."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from roost.secagg import ShamirError
from roost.secagg.shamir import (
    MAX_SECRET_BYTES,
    PRIME,
    SHARE_VALUE_BYTES,
    Share,
    reconstruct,
    split,
)


def test_the_field_prime_passes_fermat_tests_and_fits_a_64_byte_secret() -> None:
    assert all(pow(base, PRIME - 1, PRIME) == 1 for base in (2, 3, 5, 7, 11, 13))
    assert PRIME > 1 << (8 * (MAX_SECRET_BYTES + 1))


@pytest.mark.parametrize(
    "secret",
    [os.urandom(32), b"\x00\x00\x07" + os.urandom(29), b"", b"\xff" * MAX_SECRET_BYTES],
    # Fixed ids: parallel test workers must collect the same test names.
    ids=["random", "leading-zeros", "empty", "largest"],
)
def test_every_threshold_subset_reconstructs_the_exact_secret(secret: bytes) -> None:
    ids = [3, 9, 1, 17, 5]
    shares = split(secret, 3, ids)
    assert [share.index for share in shares] == ids
    for subset in itertools.combinations(shares, 3):
        assert reconstruct(subset, 3) == secret
    assert reconstruct(reversed(shares), 3) == secret  # extra shares: the first t are used


def test_fewer_than_threshold_shares_do_not_give_the_secret() -> None:
    secret = os.urandom(32)
    shares = split(secret, 4, [1, 2, 3, 4, 5, 6])
    with pytest.raises(ShamirError, match="need 4 shares"):
        reconstruct(shares[:3], 4)
    # Pretending t − 1 shares are enough rebuilds something else entirely.
    try:
        guess = reconstruct(shares[:3], 3)
    except ShamirError:
        guess = None
    assert guess != secret


def test_two_sharings_of_one_secret_look_unrelated() -> None:
    secret = b"\x00" * 32
    first, second = split(secret, 2, [1, 2]), split(secret, 2, [1, 2])
    assert first[0].value != second[0].value  # fresh random coefficients each time


def test_share_bytes_round_trip_and_refuse_non_field_values() -> None:
    share = split(os.urandom(32), 2, [7, 8])[0]
    data = share.value_bytes()
    assert len(data) == SHARE_VALUE_BYTES
    assert Share.from_bytes(7, data) == share
    with pytest.raises(ShamirError, match="66 bytes"):
        Share.from_bytes(7, data[:-1])
    with pytest.raises(ShamirError, match="not an element of the field"):
        Share.from_bytes(7, b"\xff" * SHARE_VALUE_BYTES)


@pytest.mark.parametrize(
    ("threshold", "ids", "message"),
    [
        (1, [1, 2, 3], "threshold must be an int >= 2"),
        (True, [1, 2, 3], "threshold must be an int >= 2"),
        (4, [1, 2, 3], "more than the 3 share ids"),
        (2, [1, 2, 2], "must be distinct"),
        (2, [0, 1, 2], "0 would hand out the secret"),
        (2, [-1, 1], r"ints in \[1,"),
        (2, [1, 2.0], r"ints in \[1,"),
    ],
)
def test_split_refuses_bad_parameters(threshold, ids, message) -> None:
    with pytest.raises(ShamirError, match=message):
        split(os.urandom(32), threshold, ids)


def test_split_refuses_a_secret_that_does_not_fit_the_field() -> None:
    with pytest.raises(ShamirError, match="length <= 64"):
        split(os.urandom(MAX_SECRET_BYTES + 1), 2, [1, 2])
    with pytest.raises(ShamirError, match="bytes"):
        split("not bytes", 2, [1, 2])  # type: ignore[arg-type]


def test_reconstruct_refuses_duplicate_ids() -> None:
    shares = split(os.urandom(16), 2, [1, 2, 3])
    with pytest.raises(ShamirError, match="distinct"):
        reconstruct([shares[0], shares[0]], 2)


def test_large_ids_and_thresholds_round_trip() -> None:
    chooser = random.Random(5)
    ids = chooser.sample(range(1, 1 << 31), 60)
    secret = os.urandom(32)
    shares = split(secret, 31, ids)
    assert reconstruct(chooser.sample(shares, 31), 31) == secret
