"""Ed25519 key pairs of nodes and publishers: make, save, load, sign, check, name.

A key pair lives in two PEM files: `NAME.pem` (the private key, readable by its owner only) and
`NAME.pub` (the public key, to hand out). A public key also has a one-line form,
`ed25519:<base64url of its 32 bytes>`, short enough to paste into a command or a config file;
`load_public_key` reads either. Its fingerprint (`sha256:` and 16 hex digits) names it in
messages.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from roost.errors import ConfigurationError

__all__ = [
    "LINE_PREFIX",
    "PublicKeySource",
    "b64decode",
    "b64encode",
    "fingerprint",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
    "public_key_line",
    "public_key_path",
    "sign",
    "verify",
]

LINE_PREFIX = "ed25519:"
"""The one-line form of a public key starts with this."""


def b64encode(data: bytes) -> str:
    """`data` as unpadded base64url text (the node protocol's form of bytes)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """The bytes of base64url `text`, padded or not; ValueError when it is not base64url."""
    if not isinstance(text, str):
        raise ValueError(f"expected base64url text, got {type(text).__name__}")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as error:
        raise ValueError(f"not base64url: {error}") from None


def public_key_path(private_path: str | Path) -> Path:
    """Where the public half of the key at `private_path` lives: `node.pem` -> `node.pub`."""
    path = Path(private_path)
    return path.with_name(f"{path.stem if path.suffix == '.pem' else path.name}.pub")


def generate_key_pair(private_path: str | Path, overwrite: bool = False) -> Ed25519PrivateKey:
    """Make a key pair from the OS's randomness and write it to `private_path` (mode 0600) and
    `public_key_path(private_path)`; refuses to replace an existing key unless `overwrite`."""
    private_path = Path(private_path)
    if private_path.exists() and not overwrite:
        raise ConfigurationError(
            f"{private_path} already exists: keep it, or remove it first to make a new key "
            "(anything that trusts the old public key must then be given the new one)"
        )
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created owner-only from the start: a private key must never be readable by others.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public_key_path(private_path).write_bytes(_public_pem(key.public_key()))
    return key


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file `path`, or a one-line error saying what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the private key {path}: {error.strerror or error}; make one with "
            "`roost sign --new-key KEY.pem` (a publisher) or `roost node --init DIR` (a node)"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(
            f"{path} is not an unencrypted PEM private key ({error})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}; roost keys are Ed25519")
    return key


PublicKeySource = Ed25519PublicKey | Ed25519PrivateKey | str | Path | bytes
"""What `load_public_key` reads: a key (a private key's public half), its one-line form, PEM text
or bytes, its 32 raw bytes, or the path of a PEM file."""


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """An Ed25519 public key from any `PublicKeySource`; a one-line error when `source` is none
    of these."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, bytes) and len(source) == 32:
        return Ed25519PublicKey.from_public_bytes(source)
    text = source.decode("ascii", "replace") if isinstance(source, bytes) else str(source)
    text = text.strip()
    if text.startswith(LINE_PREFIX):
        try:
            raw = b64decode(text[len(LINE_PREFIX) :])
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigurationError(
                f"{text[:40]!r} is not an Ed25519 public key: its one-line form is ed25519: and "
                "43 base64url characters"
            ) from None
    where = "the text given"
    if "-----BEGIN" not in text:
        where = text
        try:
            text = Path(text).read_text()
        except (OSError, ValueError) as error:
            raise ConfigurationError(
                f"cannot read the public key {where}: {getattr(error, 'strerror', None) or error}"
                f"; give a .pub file or the key's one-line form ({LINE_PREFIX}...)"
            ) from None
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError:
        raise ConfigurationError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{where} holds a {type(key).__name__}; roost keys are Ed25519")
    return key


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a public key (of a private key's public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_line(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The one-line form of a public key: `ed25519:` and its bytes in base64url."""
    return LINE_PREFIX + b64encode(public_key_bytes(key))


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """A short name of a public key for messages: `sha256:` and 16 hex digits of its hash."""
    raw = key if isinstance(key, bytes) else public_key_bytes(key)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The Ed25519 signature of `data` by `key` (64 bytes)."""
    return key.sign(data)


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is `key`'s signature of `data`."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
