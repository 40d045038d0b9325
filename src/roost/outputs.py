"""Writing a run's results (`history.json`, `model.npz`, `history.csv`, `plot.png`), atomically."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

from roost.core.files import atomic_write_bytes, save_parameters, unwritable_reason
from roost.errors import ConfigurationError, RoostError
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


def fallback_parents() -> list[Path]:
    """Where `save_run_elsewhere` tries to write, in order: the system's temporary directory
    (often another file system than the results'), the working directory, the home directory."""
    parents: list[Path] = []
    for parent in (Path(tempfile.gettempdir()), Path.cwd(), Path.home()):
        if parent not in parents:
            parents.append(parent)
    return parents


def save_run_elsewhere(history: History) -> Path | None:
    """Write `model.npz`, `history.json` and `history.csv` (`save_run` without the plot) into
    a new `roost-run-*` directory under the first of `fallback_parents` that takes them.

    For a run whose results could not be written where they were asked for: returns the
    directory, or None when none took them (each one tried is removed again).
    """
    for parent in fallback_parents():
        try:
            directory = Path(tempfile.mkdtemp(prefix="roost-run-", dir=parent))
        except OSError:
            continue
        try:
            save_run(directory, history, plot=False)
        except OSError as error:
            log.warning("could not write the run's results to %s either: %s", directory, error)
            shutil.rmtree(directory, ignore_errors=True)
            continue
        return directory
    return None


def keep_outputs(out_dir: str | Path | None, plot: bool, history: History) -> RoostError | None:
    """Write the run's files (`save_run`) to `out_dir` (None: nowhere), before the clients of a
    deployed run are sent home.

    Should that fail (a full disk), they are written to a fallback directory instead
    (`save_run_elsewhere`), and the error saying where is returned, to raise once the clients
    are released. Raises `RoostError` if no directory takes them.
    """
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    try:
        written = save_run(out_dir, history, plot=plot)
    except OSError as error:
        reason = error.strerror or str(error)
        elsewhere = save_run_elsewhere(history)
        if elsewhere is None:
            raise RoostError(
                f"the run finished but its outputs could not be written to {out_dir} ({reason}) "
                "nor to a temporary, working or home directory; free disk space or fix the "
                "directory's permissions (with a state directory, its latest round file holds "
                "the final model)"
            ) from None
        log.error(
            "could not write to %s (%s): wrote the run's outputs to %s", out_dir, reason, elsewhere
        )
        return RoostError(
            f"the run finished but its outputs could not be written to {out_dir} ({reason}); "
            f"they are in {elsewhere} instead: move them from there, and free disk space or "
            "fix the directory's permissions"
        )
    for path in written:
        log.info("wrote %s", path)
    return None
