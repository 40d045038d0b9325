"""Per-client random streams for simulated training and simulated attacks.

Not for anything that protects people: DP noise and secure-aggregation masks use the operating
system's CSPRNG or a cryptographic stream instead.
"""

from __future__ import annotations

import numpy as np


def client_rng(seed: int, server_round: int, partition_id: int) -> np.random.Generator:
    """One reproducible stream per (seed, round, client), independent across clients and rounds."""
    return np.random.default_rng([seed, server_round, partition_id])
