"""Client sampling: the default rule for choosing a round's cohort."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from roost.core.types import ClientId


def sample_uniformly(
    client_ids: Sequence[ClientId], count: int, rng: np.random.Generator
) -> list[ClientId]:
    """`count` distinct clients drawn uniformly, returned in the order of `client_ids`."""
    chosen = np.sort(rng.choice(len(client_ids), size=count, replace=False))
    return [client_ids[index] for index in chosen]
