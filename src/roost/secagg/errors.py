"""Errors of secure aggregation: who is at fault decides what the caller does next.

`SecAggClientError` names one client whose message was rejected; the server drops that client and
keeps going. `SecAggAbortedError` means the round as a whole cannot finish (too few clients left
to unmask the sum). `SecAggInstructionError` is a client refusing what its server asked.
"""

from __future__ import annotations

from roost.errors import ConfigurationError, InvalidMessageError, RoostError


class SecAggError(RoostError):
    """Base class of every secure-aggregation error."""


class ShamirError(SecAggError, ValueError):
    """Secret sharing was asked for something impossible (bad threshold, ids or shares)."""


class SecAggConfigError(SecAggError, ConfigurationError):
    """A secure-aggregation setting is out of range or would make the sum wrap around."""


class MessageFormatError(SecAggError, InvalidMessageError):
    """A message does not have the arrays and values its type requires."""


class SecAggClientError(SecAggError, InvalidMessageError):
    """One client sent something the server rejected; the client is dropped from the round."""

    def __init__(self, client_id: str, reason: str) -> None:
        super().__init__(f"client {client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


class SecAggInstructionError(SecAggError, InvalidMessageError):
    """A client refused an instruction from its server (malformed, inconsistent or unsafe)."""


class SecAggAbortedError(SecAggError):
    """The round cannot complete: too few clients remain to remove the masks."""


class QuantizationError(SecAggError, ValueError):
    """Values cannot be quantized or a sum cannot be dequantized as asked."""


class CryptoError(SecAggError, ValueError):
    """A key, ciphertext or tag failed a cryptographic check."""
