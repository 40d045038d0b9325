"""CIFAR-10 from the standard files on disk, or downloaded once when the machine is online.

    (x_train, y_train), (x_test, y_test) = load_cifar10()

`x` is uint8 with shape (n, 32, 32, 3) (channels last, as Keras expects); `y` is int64 with shape
(n,). Both published layouts are read: the binary version (`cifar-10-batches-bin/`, plain bytes) and
the Python version (`cifar-10-batches-py/`, the folder Keras' own loader leaves in
`~/.keras/datasets`). The Python version's files are pickles; they are read with an unpickler that
accepts nothing but NumPy arrays, lists, dicts and strings, so a tampered file cannot run code.
A download fetches the binary version, which needs no unpickling at all.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from roost.data._files import (
    DatasetUnavailableError,
    extract_tar,
    find_or_download,
    try_download,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_RECORD = 1 + 32 * 32 * 3
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_BINARY_DIR, _PYTHON_DIR = "cifar-10-batches-bin", "cifar-10-batches-py"
_TARBALLS = ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz")

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_cifar10(
    root: str | Path | None = None, *, download: bool = False, url: str = CIFAR10_URL
) -> Arrays:
    """Return `(x_train, y_train), (x_test, y_test)` (50,000 and 10,000 images).

    Args:
        root: the folder holding `cifar-10-batches-bin/`, `cifar-10-batches-py/` or one of the
            tarballs. Without it roost looks in `$ROOST_DATA`, `~/.cache/roost/datasets` and
            `~/.keras/datasets`.
        download: when the files are nowhere, fetch the binary tarball (about 160 MB) into `root`
            (or `~/.cache/roost/datasets`) and extract it there.
        url: where to download from.

    Raises:
        DatasetUnavailableError: the files are not on disk and `download` is False or failed.
    """
    return find_or_download(
        "CIFAR-10",
        root,
        download=download,
        wanted=f"{_BINARY_DIR}/, {_PYTHON_DIR}/ or {' / '.join(_TARBALLS)}",
        load_from=_load_from,
        fetch=lambda target: try_download(url, target / _TARBALLS[0]),
    )


def _load_from(roots: list[Path]) -> Arrays | None:
    for root in roots:
        if (root / _BINARY_DIR / "test_batch.bin").is_file():
            return _read_binary(root / _BINARY_DIR)
        if (root / _PYTHON_DIR / "test_batch").is_file():
            return _read_python(root / _PYTHON_DIR)
        for tarball in _TARBALLS:
            if (root / tarball).is_file():
                extract_tar(root / tarball, root)
                return _load_from([root])
    return None


def _read_binary(folder: Path) -> Arrays:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % _RECORD:
            raise DatasetUnavailableError(
                f"{folder / name} has {raw.size} bytes, not a multiple of {_RECORD}: the file is "
                "damaged; delete it and download again"
            )
        records = raw.reshape(-1, _RECORD)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), records[:, 0].astype(np.int64)

    return _stack([read(f"{name}.bin") for name in _TRAIN_BATCHES]), read("test_batch.bin")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays and plain containers; refuses every other class or function."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_python(folder: Path) -> Arrays:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        try:
            batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as error:
            raise DatasetUnavailableError(
                f"{path} is not a CIFAR-10 batch ({error}); delete it and download again"
            ) from error
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), labels

    return _stack([read(name) for name in _TRAIN_BATCHES]), read("test_batch")


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
