"""Which of a bundle's Python requirements this environment lacks, and installing them.

A requirement is met when its distribution is installed here at a version its specifier allows
(`numpy>=1.26`); environment markers that do not apply here are skipped. A node installs nothing
unless its operator allowed it (`allow_install`); otherwise it refuses the run with the list.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata

from roost.federation.manifest import BundleRefusedError

__all__ = ["PROVIDED", "install_requirements", "missing_requirements"]

PROVIDED = frozenset({"roost", "flwr"})
"""Requirements roost meets itself: roost, and `flwr`, which roost's Flower layer provides for
the Flower projects it runs."""

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _met(requirement: str) -> bool:
    try:  # packaging reads specifiers and markers exactly; without it, the name must be installed
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        match = _NAME.match(requirement)
        if match is None:
            raise BundleRefusedError(f"bundle requirement {requirement!r} is malformed") from None
        return _normalize(match.group(1)) in PROVIDED or _installed(match.group(1)) is not None
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        raise BundleRefusedError(f"bundle requirement {requirement!r} is malformed") from None
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True  # not for this platform or Python
    if _normalize(parsed.name) in PROVIDED:
        return True
    version = _installed(parsed.name)
    return version is not None and parsed.specifier.contains(version, prereleases=True)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: Iterable[str]) -> list[str]:
    """The requirements this environment does not meet, as written in the bundle."""
    return [requirement for requirement in requirements if not _met(requirement)]


def install_requirements(requirements: list[str], timeout: float = 900) -> None:
    """`pip install` the requirements into this interpreter's environment; BundleRefusedError
    with pip's last line when it fails."""
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    try:
        done = subprocess.run(
            [*command, *requirements], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BundleRefusedError(f"installing {', '.join(requirements)} failed: {error}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise BundleRefusedError(f"installing {', '.join(requirements)} failed: {last}")
