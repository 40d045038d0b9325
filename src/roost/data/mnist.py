"""MNIST from the standard IDX files on disk, or downloaded once when the machine is online.

    (x_train, y_train), (x_test, y_test) = load_mnist()

`x` is uint8 with shape (n, 28, 28); `y` is int64 with shape (n,). roost reads the four IDX files
(`train-images-idx3-ubyte`, … plain or `.gz`) from `root`, `root/mnist` or `root/MNIST/raw`, or
Keras' `mnist.npz` (loaded with `allow_pickle=False`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from roost.data._files import (
    DatasetUnavailableError,
    find_or_download,
    try_download,
)

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_SUBFOLDERS = (".", "mnist", "MNIST/raw")

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_mnist(
    root: str | Path | None = None, *, download: bool = False, url: str = MNIST_URL
) -> Arrays:
    """Return `(x_train, y_train), (x_test, y_test)` (60,000 and 10,000 digits).

    Args:
        root: a folder with the IDX files (also searched: `root/mnist`, `root/MNIST/raw`) or
            `mnist.npz`. Without it roost looks in `$ROOST_DATA`, `~/.cache/roost/datasets` and
            `~/.keras/datasets`.
        download: when the files are nowhere, fetch the four `.gz` files (about 12 MB) from `url`
            into `root/mnist` (or `~/.cache/roost/datasets/mnist`).
        url: a folder URL ending in `/` that serves the four `.gz` files.

    Raises:
        DatasetUnavailableError: the files are not on disk and `download` is False or failed.
    """

    def fetch(target: Path) -> str | None:
        for name in FILES.values():
            reason = try_download(f"{url}{name}.gz", target / f"{name}.gz")
            if reason is not None:
                return reason
        return None

    return find_or_download(
        "MNIST",
        root,
        download=download,
        wanted="the four IDX files (train-images-idx3-ubyte[.gz], …) or mnist.npz",
        load_from=_load_from,
        fetch=fetch,
        subfolder="mnist",
    )


def _load_from(roots: list[Path]) -> Arrays | None:
    for root in roots:
        for sub in _SUBFOLDERS:
            folder = root / sub
            paths = {key: _find(folder, name) for key, name in FILES.items()}
            if all(path is not None for path in paths.values()):
                return (
                    (read_idx(paths["train_images"]), _labels(paths["train_labels"])),
                    (read_idx(paths["test_images"]), _labels(paths["test_labels"])),
                )
        npz = root / "mnist.npz"
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as data:
                return (
                    (data["x_train"].astype(np.uint8), data["y_train"].astype(np.int64)),
                    (data["x_test"].astype(np.uint8), data["y_test"].astype(np.int64)),
                )
    return None


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _labels(path: Path) -> np.ndarray:
    return read_idx(path).astype(np.int64)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed): a magic number, the dimensions, the data."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetUnavailableError(f"{path} is not an IDX file; delete it and download again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetUnavailableError(
            f"{path} holds {len(raw)} bytes, its header promises {expected}: the file is damaged; "
            "delete it and download again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
