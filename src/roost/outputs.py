"""Writing a run's results (`history.json`, `model.npz`, `history.csv`, `plot.png`), atomically."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from roost.core.files import atomic_write_bytes, save_parameters, unwritable_reason
from roost.errors import ConfigurationError
from roost.plotting import history_csv, render_plot
from roost.server.history import History

log = logging.getLogger(__name__)


def check_out_dir(out_dir: Path | str, option: str = "--out") -> Path:
    """Make sure a run's results can be written to `out_dir` before the run starts.

    Writes (then removes) a scratch file there, creating the directory for the test and
    removing what it created, so a path that is a file, lies under a file, or cannot be written
    is refused now, in one line, instead of after the last round. Returns the directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{option} {out} is a file; give a directory for the results")
    missing = [path for path in (out, *out.parents) if not path.exists()]
    try:
        if (reason := unwritable_reason(out)) is not None:
            raise ConfigurationError(
                f"{option} {out} cannot be written ({reason}); choose a directory you can write to"
            )
    finally:
        for path in missing:  # deepest first: leave no trace of the check
            with contextlib.suppress(OSError):
                path.rmdir()
    return out


def save_run(out_dir: Path | str, history: History, *, plot: bool = True) -> list[Path]:
    """Write `model.npz` (when the run produced one), `history.json` and `history.csv` into
    `out_dir`, and `plot.png` when `plot` is true and matplotlib is installed. The model comes
    first and every file is written atomically, so no later failure loses or half-writes it."""
    out = Path(out_dir)
    written: list[Path] = []
    if history.parameters is not None:
        written.append(out / "model.npz")
        save_parameters(written[-1], history.parameters)
    written.append(out / "history.json")
    atomic_write_bytes(written[-1], history.to_json().encode())
    written.append(out / "history.csv")
    atomic_write_bytes(written[-1], history_csv(history).encode())
    if plot:
        try:
            image = render_plot(history)
        except ImportError:
            log.warning(
                'plot.png not written: matplotlib is not installed (pip install "roost[plot]"; '
                "--no-plot leaves the chart out without this note)"
            )
        except Exception as error:  # the run's results are saved; a chart must not undo that
            log.warning("plot.png not written: %s", error)
        else:
            written.append(out / "plot.png")
            atomic_write_bytes(written[-1], image)
    return written
