"""Secure aggregation (SecAgg / SecAgg+): the server learns only the sum of the cohort's inputs.

Clients quantize their update (`Quantizer`, `WeightedQuantizer`), then run four phases with the
server: advertise keys, share keys, masked input, unmask. `SecAggClient` and `SecAggServer` hold
one round's state on either side; the messages between them are plain data (`to_wire()` /
`from_wire()`), so any transport can carry them. `run_in_memory` runs a round in one process.

Cryptography (X25519, HKDF-SHA256, AES-GCM, AES-CTR) comes from the `cryptography` package; all
randomness from the OS CSPRNG. Threat model: an honest-but-curious server and clients that may
drop out at any point; the server also refuses malformed messages and unsafe unmasking.
"""

from roost.secagg.client import SecAggClient
from roost.secagg.errors import (
    CryptoError,
    MessageFormatError,
    QuantizationError,
    SecAggAbortedError,
    SecAggClientError,
    SecAggConfigError,
    SecAggError,
    SecAggInstructionError,
    ShamirError,
)
from roost.secagg.graph import SecAggParameters, default_parameters
from roost.secagg.inmemory import RoundTrace, run_in_memory
from roost.secagg.quantize import Quantizer, WeightedQuantizer
from roost.secagg.server import Phase, SecAggResult, SecAggServer

__all__ = [
    "CryptoError",
    "MessageFormatError",
    "Phase",
    "QuantizationError",
    "RoundTrace",
    "SecAggAbortedError",
    "SecAggClient",
    "SecAggClientError",
    "SecAggConfigError",
    "SecAggError",
    "SecAggInstructionError",
    "SecAggParameters",
    "SecAggResult",
    "SecAggServer",
    "ShamirError",
    "Quantizer",
    "WeightedQuantizer",
    "default_parameters",
    "run_in_memory",
]
