"""scikit-learn's handwritten digits (8×8 images, 10 classes), shipped with scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float64, (n, 64), scaled to [0, 1]
    y: np.ndarray  # int64, (n,)


@lru_cache(maxsize=4)
def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """Return (train, test): a stratified hold-out split, the same for a given seed."""
    from sklearn.datasets import load_digits  # lazily: `import roost` must not import sklearn

    data = load_digits()
    x = (data.data / 16.0).astype(np.float64)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test_mask[members[: round(len(members) * test_fraction)]] = True
    train = Split(x[~test_mask], y[~test_mask])
    test = Split(x[test_mask], y[test_mask])
    for array in (train.x, train.y, test.x, test.y):
        array.setflags(write=False)  # cached and shared by every simulated client
    return train, test
