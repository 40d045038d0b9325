"""Writing files so that a crash never leaves half of one, and parameter lists as `.npz` files.

Every file roost writes (run outputs, checkpoints, downloads) goes through `atomic_output`: the
bytes land in a temporary file next to the target, which replaces the target only once complete.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from roost.core.types import Parameters

__all__ = ["atomic_output", "atomic_write_bytes", "load_parameters", "save_parameters"]


@contextmanager
def atomic_output(path: Path, *, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write that becomes `path` only when the `with` block completes.

    On any error (or interrupt) the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.fchmod(handle, 0o666 & ~_current_umask())
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves the old file or the new one, never half of one."""
    with atomic_output(path) as file:
        file.write(data)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_parameters(path: Path | str, parameters: Parameters) -> None:
    """Save arrays as `arr_0, arr_1, …` in an .npz that loads with `allow_pickle=False`."""
    buffer = io.BytesIO()
    np.savez(buffer, *parameters)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_parameters(path: Path | str) -> Parameters:
    """Load what `save_parameters` wrote, in order."""
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def unwritable_reason(directory: Path) -> str | None:
    """Create `directory` if needed and probe it with a temporary file.

    Returns None when files can be written there, else the operating system's reason, so each
    caller can say in its own words which directory is wrong and what to do.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".roost-probe-"):
            pass
    except OSError as error:
        return str(error.strerror or error)
    return None
