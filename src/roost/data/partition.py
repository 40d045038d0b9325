"""Seeded partitioners: split sample indices across clients."""

from __future__ import annotations

import numpy as np

from roost.errors import ConfigurationError


def iid_partition(num_samples: int, num_partitions: int, seed: int | None = 0) -> list[np.ndarray]:
    """Shuffle `range(num_samples)` with `seed` and cut it into `num_partitions` near-equal parts.

    Every sample lands in exactly one partition; sizes differ by at most one.
    """
    if num_partitions < 1:
        raise ConfigurationError(f"num_partitions must be >= 1, got {num_partitions}")
    if num_samples < num_partitions:
        raise ConfigurationError(
            f"cannot split {num_samples} samples into {num_partitions} non-empty partitions; "
            "use fewer clients"
        )
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]
