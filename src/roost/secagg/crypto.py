"""The cryptographic primitives of secure aggregation, all from the `cryptography` package.

- X25519 key agreement between two clients' key pairs (one pair for encrypting shares, one for
  masks), each advertised as 32 raw public bytes.
- HKDF-SHA256 turns an agreed secret into a key for one purpose, one round and one pair of nodes.
- AES-256-GCM encrypts the Shamir shares a client sends to another through the server; the
  associated data binds the protocol, the round, the sender and the receiver, so the server can
  neither read a share nor hand it to anyone else undetected.
- AES-256-CTR expands a 32-byte seed into a mask: a vector of integers uniform mod 2^bits.
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.secagg.errors import CryptoError

KEY_BYTES = 32  # X25519 public and private keys, seeds and derived keys
NONCE_BYTES = 12
TAG_BYTES = 16
CONFIRMATION_BYTES = 32
COMMITMENT_BYTES = 32
PROTOCOL_LABEL = b"roost-secagg-v1"
_MAX_NODE_ID = (1 << 32) - 1


def generate_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public key of `private_key`."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def private_bytes(private_key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of `private_key` (what a client secret-shares for dropout recovery)."""
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_private_key(raw: bytes) -> X25519PrivateKey:
    """Parse 32 raw private-key bytes, e.g. a key the server reconstructed from shares."""
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise CryptoError(f"an X25519 private key has {KEY_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def check_public_key(raw: object, probe: X25519PrivateKey | None = None) -> bytes:
    """Return `raw` if it is a usable X25519 public key, else raise `CryptoError` saying why.

    Low-order points make every agreed secret zero; one trial agreement with `probe` (a fresh
    key when not given) catches them.
    """
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        size = len(raw) if isinstance(raw, bytes) else type(raw).__name__
        raise CryptoError(f"an X25519 public key has {KEY_BYTES} raw bytes, got {size}")
    agree(probe or generate_private_key(), raw)
    return raw


def agree(private_key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The 32-byte X25519 shared secret of `private_key` and the peer's raw public key."""
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:  # wrong size or a low-order point (all-zero secret)
        raise CryptoError(f"key agreement failed: {error}") from error


def derive_key(
    shared_secret: bytes, purpose: bytes, server_round: int, node_a: int, node_b: int
) -> bytes:
    """A 32-byte key for one purpose, round and unordered pair of nodes, by HKDF-SHA256."""
    low, high = sorted((node_a, node_b))
    info = PROTOCOL_LABEL + b"/" + purpose + _context(server_round, low, high)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
        shared_secret
    )


def encrypt_share(
    key: bytes, plaintext: bytes, *, server_round: int, sender: int, receiver: int
) -> bytes:
    """nonce ‖ AES-GCM(plaintext) ‖ tag, authenticated with (round, sender, receiver)."""
    nonce = os.urandom(NONCE_BYTES)
    associated = _share_context(server_round, sender, receiver)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt_share(
    key: bytes, ciphertext: bytes, *, server_round: int, sender: int, receiver: int
) -> bytes:
    """Inverse of `encrypt_share`; `CryptoError` if anything (bytes, ids, round) was altered."""
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError("the ciphertext is shorter than a nonce and a tag")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, _share_context(server_round, sender, receiver))
    except InvalidTag as error:
        raise CryptoError(
            f"the share from node {sender} to node {receiver} failed authentication"
        ) from error


def expand_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` integers uniform mod 2^bits (uint64), from the AES-256-CTR keystream of `seed`.

    The seed is a 32-byte key used for this one stream only (a fresh self-mask seed, or a key
    derived from a pairwise secret for one round), so a zero counter block is safe.
    """
    if not isinstance(seed, bytes) or len(seed) != KEY_BYTES:
        raise CryptoError(f"a mask seed has {KEY_BYTES} bytes")
    # Up to 32 bits need only 4 keystream bytes per value: half the AES work.
    word = np.dtype("<u4") if bits <= 32 else np.dtype("<u8")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(length * word.itemsize)) + encryptor.finalize()
    values = np.frombuffer(stream, dtype=word).astype(np.uint64)
    if bits < 64:
        values &= np.uint64((1 << bits) - 1)
    return values


def commit_seed(seed: bytes, server_round: int, node_id: int) -> bytes:
    """SHA-256 commitment to a self-mask seed, so the server can check the seed it rebuilds."""
    return hashlib.sha256(
        PROTOCOL_LABEL + b"/seed" + _context(server_round, node_id, 0) + seed
    ).digest()


def confirm_seed(seed: bytes) -> bytes:
    """A one-way confirmation of a pairwise seed, sent inside the encrypted shares.

    The receiver compares it with its own view of the seed: a mismatch means the two nodes did
    not agree on one mask (for instance a tampered public key), which would not cancel.
    """
    return hashlib.sha256(PROTOCOL_LABEL + b"/confirm" + seed).digest()


def _share_context(server_round: int, sender: int, receiver: int) -> bytes:
    return PROTOCOL_LABEL + b"/share" + _context(server_round, sender, receiver)


def _context(server_round: int, first: int, second: int) -> bytes:
    if not (0 <= first <= _MAX_NODE_ID and 0 <= second <= _MAX_NODE_ID):
        raise CryptoError(f"node ids must be in [0, {_MAX_NODE_ID}]")
    return struct.pack(">qII", server_round, first, second)


def pairwise_seed(
    private_key: X25519PrivateKey, peer_public: bytes, server_round: int, own_id: int, peer_id: int
) -> bytes:
    """The seed of the mask two nodes share: HKDF of their full X25519 secret, for this round."""
    return derive_key(
        agree(private_key, peer_public), b"pairwise-mask", server_round, own_id, peer_id
    )


def share_encryption_key(
    private_key: X25519PrivateKey, peer_public: bytes, server_round: int, own_id: int, peer_id: int
) -> bytes:
    """The AES-256-GCM key for shares between two nodes in this round."""
    return derive_key(
        agree(private_key, peer_public), b"share-encryption", server_round, own_id, peer_id
    )


def add_pairwise_mask(total: np.ndarray, seed: bytes, own_id: int, peer_id: int, bits: int) -> None:
    """Add (own_id < peer_id) or subtract the pair's mask in place, so the pair's masks cancel."""
    mask = expand_mask(seed, total.size, bits)
    if own_id < peer_id:
        total += mask
    else:
        total -= mask  # uint64 wraps mod 2^64, and 2^bits divides 2^64
