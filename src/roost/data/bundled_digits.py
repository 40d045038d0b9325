"""scikit-learn's handwritten digits (8×8 images, 10 classes), from the copy scikit-learn ships."""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float64, (n, 64), scaled to [0, 1]
    y: np.ndarray  # int64, (n,)


@lru_cache(maxsize=4)
def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 1,797 digits, split into `(train, test)`, the same split for a given seed.

    Each is a `Split` of read-only arrays (cached, and shared by every simulated client):
    `x`, float64 of shape (n, 64), the 8×8 pixels scaled to [0, 1]; `y`, int64 of shape (n,),
    the labels 0–9. The split is stratified: `test` holds round(`test_fraction` × its count) of
    each label's images, drawn with `seed`, and `train` the rest; with the defaults, 1,438
    training and 359 test images.
    """
    pixels, labels = _read_digits()
    x = pixels / 16.0
    y = labels
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


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels float64 (1797, 64), labels int64) from the CSV file scikit-learn ships.

    The file is read directly, without importing scikit-learn: that import costs about a second,
    more than training a small model on the digits. If the file is not where scikit-learn keeps
    it, fall back to `sklearn.datasets.load_digits`.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as file:
                table = np.loadtxt(file, delimiter=",", dtype=np.float64)
            if table.shape == (1797, 65):
                return np.ascontiguousarray(table[:, :64]), table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "loading the digits needs scikit-learn's copy of them: pip install scikit-learn"
        ) from error
    data = load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)
