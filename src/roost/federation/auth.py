"""Who is asking: people by bearer token, nodes by an Ed25519-signed challenge.

A node proves it holds the private key whose public key an operator registered: it signs 32
random bytes the coordinator issued a moment ago (one use), so nothing secret is shared and a
recorded exchange cannot be replayed.
"""

from __future__ import annotations

from roost.errors import ConfigurationError
from roost.federation.keys import load_public_key, public_key_line, verify


def normalized_public_key(source: str) -> str:
    """The one-line form (`ed25519:...`) of a public key given as PEM text, a `.pub` file's
    path or its one-line form; ConfigurationError saying what is wrong otherwise."""
    if not source.strip():
        raise ConfigurationError("the public key is empty: give the node's .pub file")
    return public_key_line(load_public_key(source))


def signature_valid(public_key: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `message` by `public_key`."""
    try:
        key = load_public_key(public_key)
    except ConfigurationError:
        return False
    return verify(key, signature, message)
