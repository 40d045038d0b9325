"""Finding data set files on disk and downloading them, shared by the CIFAR-10 and MNIST loaders."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from roost.core.files import atomic_output
from roost.errors import RoostError

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatasetUnavailableError(RoostError, FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message lists where roost looked."""


def default_roots() -> list[Path]:
    """Where loaders look when no `root` is given, in order.

    `$ROOST_DATA`, then `~/.cache/roost/datasets` (where downloads go), then `~/.keras/datasets`
    (where Keras' own loaders keep their files).
    """
    roots = [download_root(), Path.home() / ".cache" / "roost" / "datasets"]
    roots.append(Path.home() / ".keras" / "datasets")
    return list(dict.fromkeys(roots))  # without repeats, in order


def download_root() -> Path:
    """The folder downloads are written to: `$ROOST_DATA` if set, else `~/.cache/roost/datasets`."""
    if os.environ.get("ROOST_DATA"):
        return Path(os.environ["ROOST_DATA"]).expanduser()
    return Path.home() / ".cache" / "roost" / "datasets"


def search_roots(root: str | Path | None) -> list[Path]:
    return [Path(root).expanduser()] if root is not None else default_roots()


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Fetch `url` into `destination` atomically (a failed download leaves nothing behind)."""
    log.info("downloading %s", url)
    with (
        atomic_output(destination, suffix=".part") as file,
        urllib.request.urlopen(url, timeout=timeout) as response,
    ):
        shutil.copyfileobj(response, file)
    return destination


def extract_tar(archive: Path, into: Path) -> None:
    """Extract a .tar.gz, refusing members that would land outside `into` or are links/devices."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        base = into.resolve()
        for member in members:
            target = (into / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(base):
                raise DatasetUnavailableError(
                    f"{archive} contains an unsafe entry {member.name!r}; delete the file and "
                    "download it again"
                )
        tar.extractall(into, members=members, filter="data")


def unavailable(
    name: str, looked_in: Sequence[Path], wanted: str, reason: str
) -> DatasetUnavailableError:
    places = ", ".join(str(path) for path in looked_in)
    return DatasetUnavailableError(
        f"{name} is not on disk and could not be downloaded ({reason}). Looked for {wanted} in: "
        f"{places}. Put the files in one of those folders (or pass root=...), or call again with "
        "download=True on a machine that is online."
    )


def try_download(url: str, destination: Path) -> str | None:
    """Download `url`; return None on success or a one-line reason on failure."""
    try:
        download(url, destination)
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"download of {url} failed: {error}"
    return None


def find_or_download(
    dataset: str,
    root: str | Path | None,
    *,
    download: bool,
    wanted: str,
    load_from: Callable[[list[Path]], T | None],
    fetch: Callable[[Path], str | None],
    subfolder: str = "",
) -> T:
    """Load `dataset` from the first search root that has it; else download it and load that.

    `load_from(folders)` returns the arrays or None; `fetch(folder)` downloads into `folder` and
    returns None, or a one-line reason it failed. Every failure is a `DatasetUnavailableError`
    that lists where roost looked and what to do.
    """
    roots = search_roots(root)
    found = load_from(roots)
    if found is not None:
        return found
    if not download:
        raise unavailable(dataset, roots, wanted, "download=False")
    target = (Path(root).expanduser() if root is not None else download_root()) / subfolder
    reason = fetch(target)
    if reason is not None:
        raise unavailable(dataset, roots, wanted, reason)
    found = load_from([target])
    if found is None:
        raise unavailable(dataset, [target], wanted, f"the download did not hold {dataset}'s files")
    return found
