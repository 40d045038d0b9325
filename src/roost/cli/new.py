"""`roost new NAME [--framework F]`: write a small, complete roost project to start from.

    roost new myapp --framework pytorch && roost run myapp

The project: `pyproject.toml` (its `[tool.roost]` table names the components and the run
config), a package with the client, the strategy, the model and its data (scikit-learn's digits,
bundled: nothing to download), a README and a test. The command prints, and the project's
README repeats, the line that installs it with what its framework needs (torch named with its
version, so pip does not pick a multi-GB CUDA build; a backend for Keras) and with pytest.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from roost.cli.options import CommandParser
from roost.core.packages import KERAS_BACKEND_NOTE, TENSORFLOW, TORCH, TORCH_CPU_NOTE
from roost.errors import ConfigurationError


@dataclass(frozen=True)
class Install:
    """One way to install a project: packages pip installs with it, an environment variable to
    set, and when to choose it."""

    packages: tuple[str, ...] = ()
    environment: str = ""
    label: str = ""

    def command(self, project: str) -> str:
        """The shell line that installs the project at `project` (with its test extra)."""
        line = " ".join(["pip install", *self.packages, f"-e '{project}[test]'"])
        return f"{line} && export {self.environment}" if self.environment else line


@dataclass(frozen=True)
class Framework:
    """What a project of one framework needs: its packages, how to install them, a fitting
    learning rate, a title, and what its README says about installing it."""

    title: str
    dependencies: tuple[str, ...]
    learning_rate: str
    module: str
    installs: tuple[Install, ...] = (Install(),)
    note: str = ""
    pytest_options: str = ""


FRAMEWORKS: dict[str, Framework] = {
    "numpy": Framework("NumPy", ("numpy>=1.26",), "0.5", "numpy"),
    "pytorch": Framework(
        "PyTorch",
        ("torch>=2.2",),
        "0.5",
        "torch",
        installs=(Install((TORCH,)),),
        note=f"torch is named with its version because the default package index gives Linux a "
        f"multi-GB CUDA build; {TORCH_CPU_NOTE}.",
    ),
    "keras": Framework(
        "Keras",
        ("keras>=3.0",),
        "0.5",
        "keras",
        installs=(
            Install((TENSORFLOW,), label="Keras on TensorFlow"),
            Install((TORCH,), environment="KERAS_BACKEND=torch", label="Keras on torch"),
        ),
        note=f"{KERAS_BACKEND_NOTE} (set it wherever the app runs: roost run, pytest, "
        f"roost server and roost client); for torch, {TORCH_CPU_NOTE}.",
        # Keras 3 on torch turns tensors into arrays with np.array(tensor), which NumPy 2 warns
        # about hundreds of times a test run; the warning is Keras's to fix, not the app's.
        pytest_options="\nfilterwarnings = [\"ignore:__array__ implementation doesn't accept a "
        'copy keyword:DeprecationWarning"]',
    ),
    "sklearn": Framework("scikit-learn", ("scikit-learn>=1.3",), "0.1", "sklearn"),
}
"""The frameworks `roost new --framework` writes a project for."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

# template file -> where it goes in the project ("{package}" is the project's package)
_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "{package}/__init__.py",
    "data.py.tmpl": "{package}/data.py",
    "client_app.py.tmpl": "{package}/client_app.py",
    "server_app.py.tmpl": "{package}/server_app.py",
    "task_{framework}.py.tmpl": "{package}/task.py",
    "test_app.py.tmpl": "tests/test_app.py",
}


def add_command(root: CommandParser) -> None:
    """Add `roost new` to `root`."""
    parser = root.add_command("new", __doc__)
    parser.add_argument("name", metavar="NAME", help="the project's name and directory")
    parser.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        default="numpy",
        help="the model's framework (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the project and say how to run it."""
    directory = create_project(args.name, args.framework)
    framework = FRAMEWORKS[args.framework]
    print(f"wrote {args.framework} project {directory.name} in {directory}")
    for number, install in enumerate(framework.installs):
        print(f"{'install it:' if number == 0 else 'or:':<14}{install.command(args.name)}")
    print(f"run it:       roost run {args.name}")
    print(f"test it:      pytest {args.name}")
    if framework.note:
        print(framework.note)
    return 0


def create_project(path: str | Path, framework: str = "numpy") -> Path:
    """Write a new project at `path` (its last part is the project's name); return its directory.

    Raises `ConfigurationError` for a name that cannot be a Python package, an unknown
    framework, or a `path` that exists and is not an empty directory.
    """
    directory = Path(path)
    name = directory.name
    package = _package_name(name)
    if framework not in FRAMEWORKS:
        raise ConfigurationError(
            f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigurationError(
            f"{directory} already exists; choose another name or remove it first"
        )
    chosen = FRAMEWORKS[framework]
    values = {
        "name": name,
        "package": package,
        "framework_title": chosen.title,
        "dependencies": ", ".join(f'"{d}"' for d in ("roost>=0.1", *chosen.dependencies)),
        "learning_rate": chosen.learning_rate,
        "install_lines": _readme_install_lines(chosen),
        "install_note": f"\n{textwrap.fill(chosen.note, 99)}\n" if chosen.note else "",
        "pytest_options": chosen.pytest_options,
    }
    templates = resources.files("roost") / "templates" / "new"
    for source, target in _FILES.items():
        text = (templates / source.format(framework=framework)).read_text(encoding="utf-8")
        destination = directory / target.format(package=package)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(Template(text).substitute(values), encoding="utf-8")
    return directory.resolve()


def _readme_install_lines(framework: Framework) -> str:
    """The install commands of the project's README, each with a comment saying what it is."""
    lines = []
    for number, install in enumerate(framework.installs):
        command = install.command(".")
        comment = "# install it" if number == 0 else "# or"
        if install.label:
            comment += f" ({install.label})"
        if len(command) < 48:  # the comment fits beside it, aligned with the lines below
            lines.append(f"{command:<47} {comment}")
        else:
            lines += [comment, command]
    return "\n".join(lines)


def _package_name(name: str) -> str:
    """The Python package of project `name` (`my-app` -> `my_app`), refused if it cannot be one
    or would hide a module the app imports."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{name!r} cannot name a project: start with a letter, then letters, digits, "
            "'-' or '_' (e.g. myapp)"
        )
    package = name.lower().replace("-", "_")
    taken = {"roost", "tests", *(f.module for f in FRAMEWORKS.values())}
    if keyword.iskeyword(package) or package in taken or package in sys.stdlib_module_names:
        raise ConfigurationError(
            f"{name!r} would hide the module {package!r} that the app needs; choose another name"
        )
    return package
