"""Writing a run's results (`history.json`, `model.npz`, `history.csv`, `plot.png`), atomically."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from roost.core.types import Parameters
from roost.server.history import History


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.fchmod(handle, 0o666 & ~_current_umask())
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_parameters(path: Path, parameters: Parameters) -> None:
    """Save arrays as `arr_0, arr_1, …` in an .npz that loads with `allow_pickle=False`."""
    buffer = io.BytesIO()
    np.savez(buffer, *parameters)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_parameters(path: Path) -> Parameters:
    """Load what `save_parameters` wrote, in order."""
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def save_run(out_dir: Path | str, history: History, *, plot: bool = True) -> list[Path]:
    """Write `history.json`, `model.npz` (when the run produced one) and `history.csv` into
    `out_dir`, and `plot.png` when `plot` is true and matplotlib is installed."""
    from roost.plotting import history_csv, render_plot  # plotting imports this module

    out = Path(out_dir)
    written = [out / "history.json"]
    atomic_write_bytes(written[0], history.to_json().encode())
    if history.parameters is not None:
        written.append(out / "model.npz")
        save_parameters(written[-1], history.parameters)
    written.append(out / "history.csv")
    atomic_write_bytes(written[-1], history_csv(history).encode())
    if plot:
        try:
            image = render_plot(history)
        except ImportError:
            logging.getLogger(__name__).warning(
                "plot.png not written: matplotlib is not installed (pip install matplotlib)"
            )
        except Exception as error:  # the run's results are saved; a chart must not undo that
            logging.getLogger(__name__).warning("plot.png not written: %s", error)
        else:
            written.append(out / "plot.png")
            atomic_write_bytes(written[-1], image)
    return written
