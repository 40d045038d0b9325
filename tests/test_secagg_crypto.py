"""The primitives: agreement, authenticated share encryption bound to its context, mask streams."""

from __future__ import annotations

import os

import numpy as np
import pytest

from roost.secagg import CryptoError, crypto


def test_both_sides_of_a_pair_derive_the_same_keys_and_seeds() -> None:
    alice, bob = crypto.generate_private_key(), crypto.generate_private_key()
    alice_public, bob_public = crypto.public_bytes(alice), crypto.public_bytes(bob)
    assert len(alice_public) == crypto.KEY_BYTES
    assert crypto.agree(alice, bob_public) == crypto.agree(bob, alice_public)
    assert crypto.pairwise_seed(alice, bob_public, 4, 1, 2) == crypto.pairwise_seed(
        bob, alice_public, 4, 2, 1
    )
    # Another round or another purpose gives an unrelated key from the same secret.
    seeds = {
        crypto.pairwise_seed(alice, bob_public, 4, 1, 2),
        crypto.pairwise_seed(alice, bob_public, 5, 1, 2),
        crypto.share_encryption_key(alice, bob_public, 4, 1, 2),
    }
    assert len(seeds) == 3


def test_private_keys_survive_the_raw_byte_round_trip() -> None:
    key = crypto.generate_private_key()
    raw = crypto.private_bytes(key)
    assert crypto.public_bytes(crypto.load_private_key(raw)) == crypto.public_bytes(key)
    with pytest.raises(CryptoError, match="32 bytes"):
        crypto.load_private_key(raw[:31])


def test_public_keys_of_the_wrong_size_or_low_order_are_refused() -> None:
    with pytest.raises(CryptoError, match="32 raw bytes, got 31"):
        crypto.check_public_key(os.urandom(31))
    with pytest.raises(CryptoError, match="got str"):
        crypto.check_public_key("k" * 32)
    with pytest.raises(CryptoError, match="key agreement failed"):
        crypto.check_public_key(bytes(32))  # the identity point: every secret would be zero
    key = crypto.public_bytes(crypto.generate_private_key())
    assert crypto.check_public_key(key) == key


def test_share_encryption_round_trips_and_binds_round_sender_and_receiver() -> None:
    key, plaintext = os.urandom(32), os.urandom(132)
    sealed = crypto.encrypt_share(key, plaintext, server_round=3, sender=1, receiver=2)
    assert len(sealed) == crypto.NONCE_BYTES + len(plaintext) + crypto.TAG_BYTES
    assert crypto.decrypt_share(key, sealed, server_round=3, sender=1, receiver=2) == plaintext
    for context in (
        {"server_round": 4, "sender": 1, "receiver": 2},
        {"server_round": 3, "sender": 2, "receiver": 1},
        {"server_round": 3, "sender": 1, "receiver": 5},
    ):
        with pytest.raises(CryptoError, match="failed authentication"):
            crypto.decrypt_share(key, sealed, **context)
    for position in (0, crypto.NONCE_BYTES + 5, len(sealed) - 1):  # nonce, body, tag
        flipped = bytearray(sealed)
        flipped[position] ^= 0x01
        with pytest.raises(CryptoError, match="failed authentication"):
            crypto.decrypt_share(key, bytes(flipped), server_round=3, sender=1, receiver=2)
    with pytest.raises(CryptoError, match="shorter"):
        crypto.decrypt_share(key, sealed[:20], server_round=3, sender=1, receiver=2)


@pytest.mark.parametrize("bits", [2, 17, 32, 33, 64])
def test_masks_are_deterministic_per_seed_and_in_range(bits: int) -> None:
    seed = os.urandom(32)
    mask = crypto.expand_mask(seed, 5000, bits)
    assert mask.dtype == np.uint64 and mask.shape == (5000,)
    assert np.array_equal(mask, crypto.expand_mask(seed, 5000, bits))
    assert not np.array_equal(mask, crypto.expand_mask(os.urandom(32), 5000, bits))
    if bits < 64:
        assert int(mask.max()) < 1 << bits
    # Roughly uniform: the top bit is set about half the time.
    assert 0.45 < ((mask >> np.uint64(bits - 1)) & np.uint64(1)).mean() < 0.55


def test_a_mask_needs_a_full_32_byte_seed() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        crypto.expand_mask(os.urandom(16), 10, 32)


def test_pairwise_masks_cancel_between_the_two_nodes() -> None:
    total = np.zeros(100, dtype=np.uint64)
    seed = os.urandom(32)
    crypto.add_pairwise_mask(total, seed, 3, 8, 32)
    assert total.any()
    crypto.add_pairwise_mask(total, seed, 8, 3, 32)
    assert not total.any()


def test_seed_commitments_depend_on_seed_round_and_node() -> None:
    seed = os.urandom(32)
    commitment = crypto.commit_seed(seed, 1, 2)
    assert len(commitment) == 32
    assert commitment == crypto.commit_seed(seed, 1, 2)
    assert commitment not in {
        crypto.commit_seed(os.urandom(32), 1, 2),
        crypto.commit_seed(seed, 2, 2),
        crypto.commit_seed(seed, 1, 3),
    }
