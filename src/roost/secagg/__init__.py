"""Secure aggregation (SecAgg / SecAgg+): the server learns only the sum of the cohort's inputs.

Clients quantize their update (`Quantizer`, `WeightedQuantizer`), then run four phases with the
server: advertise keys, share keys, masked input, unmask. `SecAggClient` and `SecAggServer` hold
one round's state on either side; the messages between them are plain data (`to_wire()` /
`from_wire()`), so any transport can carry them. `run_in_memory` runs a round in one process.

Cryptography (X25519, HKDF-SHA256, AES-GCM, AES-CTR) comes from the `cryptography` package; all
randomness from the OS CSPRNG. Threat model: by default (`default_parameters`) a server that may
lie about who dropped, no client colluding with it, and clients that drop out independently at
any point; `ThreatModel` chooses the graph for stated fractions of dropouts and colluding clients
and a failure probability (Bell et al. 2020). The server also refuses malformed messages and
unsafe unmasking, and each client refuses a threshold that is not above half of its share holders.
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
from roost.secagg.threat import ThreatModel

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
    "ThreatModel",
    "Quantizer",
    "WeightedQuantizer",
    "default_parameters",
    "run_in_memory",
]
