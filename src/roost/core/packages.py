"""What to install for a package that a user's code imports, and the one-line error when it is
missing.

One table serves `roost new` (the install line it prints and writes into the project's README)
and the error `roost run`, `roost server --app` and `roost client --app` give when a project's
module imports a package that is not installed: a `ModuleNotFoundError` raised inside the
project's own code names a package to install, not a module of the project.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import TracebackType

from roost.errors import ConfigurationError

TORCH = '"torch==2.13.0"'
"""torch, pinned: a bare `torch` from the default package index is a multi-GB CUDA build on Linux.
Any torch >= 2.2 works; this release has CPU builds, which the suite is tested with."""

TENSORFLOW = '"tensorflow-cpu>=2.16"'
"""Keras 3's default backend, without the GPU libraries (2.16 is the first release on Keras 3)."""

TORCH_CPU_NOTE = (
    "any torch >= 2.2 works: for a CPU build of another release, install torch by itself first "
    "from PyTorch's own CPU-only package index (pip install torch --index-url and that index's "
    "address)"
)
"""Where a CPU build of another torch release comes from, in words."""

KERAS_BACKEND_NOTE = (
    "Keras needs a backend: TensorFlow (the default), or torch with the environment variable "
    "KERAS_BACKEND=torch"
)
"""Why a Keras project installs more than Keras."""

INSTALL: dict[str, str] = {
    "torch": f"pip install {TORCH} ({TORCH_CPU_NOTE})",
    "keras": f'pip install "keras>=3.0" {TENSORFLOW} (or, with torch as the backend: pip install '
    f'"keras>=3.0" {TORCH} and set KERAS_BACKEND=torch)',
    "tensorflow": f"pip install {TENSORFLOW} (Keras's default backend), or run Keras on torch: "
    f"pip install {TORCH} and set KERAS_BACKEND=torch",
    "sklearn": "pip install scikit-learn",
    "matplotlib": 'pip install matplotlib (for roost\'s charts: pip install "roost[plot]")',
    "PIL": "pip install pillow",
    "cv2": "pip install opencv-python-headless",
    "yaml": "pip install pyyaml",
}
"""How to install the packages users' code most often lacks, by their import name."""


def install_hint(module: str) -> str:
    """The command that installs the package whose top-level module is `module`."""
    top = module.partition(".")[0]
    if top in INSTALL:
        return INSTALL[top]
    return f"pip install {top} (if its package is named otherwise, install that one)"


class MissingPackageError(ConfigurationError):
    """A project's module imports a package that is not installed here."""

    def __init__(self, message: str, package: str) -> None:
        super().__init__(message)
        self.package = package


def missing_package(
    error: ModuleNotFoundError, module_name: str, directory: Path
) -> MissingPackageError | None:
    """The one-line error for `error`, raised while importing the project module `module_name`
    from `directory`, when it names a package to install; None when the missing module is
    part of the project itself (a mistake in its settings or files instead)."""
    missing = error.name
    own_package = module_name.partition(".")[0]
    if missing is None or missing.partition(".")[0] == own_package:
        return None
    where = project_line(error, directory) or module_name
    package = missing.partition(".")[0]
    if package != missing and _installed(package):
        return MissingPackageError(
            f"{where} imports {missing}, which the installed {package} lacks; install a release "
            f"of {package} that has it ({install_hint(package)})",
            package,
        )
    return MissingPackageError(
        f"{where} needs the package {package}, which is not installed here: "
        f"{install_hint(package)}",
        package,
    )


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def project_line(error: BaseException, directory: Path) -> str | None:
    """`package/file.py:LINE`: the innermost line of the project in `directory` that `error`
    passed through (the project's import that failed), or None."""
    trace: TracebackType | None = error.__traceback__
    found = None
    root = directory.resolve()
    while trace is not None:
        path = Path(trace.tb_frame.f_code.co_filename)
        if path.is_absolute() and path.resolve().is_relative_to(root):
            found = f"{path.resolve().relative_to(root).as_posix()}:{trace.tb_lineno}"
        trace = trace.tb_next
    return found
