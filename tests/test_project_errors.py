"""A project that cannot start says why in one line (exit 2): a package its code imports is not
installed (which one, and the command that installs it), or a Flower name roost's layer lacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import roost
from roost.cli import main
from roost.cli.new import create_project

SOURCE = Path(roost.__file__).resolve().parents[1]  # the roost under test, for subprocesses

# `roost` run with some packages hidden, as if they were not installed: a finder ahead of every
# other one says each hidden name (and its submodules) cannot be found.
HIDING = """
import sys

hidden = set(sys.argv[1].split(","))


class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())
from roost.cli import main

sys.exit(main(sys.argv[2:]))
"""


def roost_without(packages: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    paths = [str(SOURCE), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    environment.pop("KERAS_BACKEND", None)  # Keras's own default: TensorFlow
    return subprocess.run(
        [sys.executable, "-c", HIDING, packages, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    error = result.stderr.strip()
    assert error.startswith("roost: error: ") and "\n" not in error, error
    return error.removeprefix("roost: error: ")


@pytest.mark.parametrize(
    ("framework", "hidden", "expected"),
    [
        (
            "keras",
            "keras",
            "app/task.py:8 needs the package keras, which is not installed here: pip install "
            '"keras>=3.0" "tensorflow-cpu>=2.16" (or, with torch as the backend: ',
        ),
        (
            "keras",
            "tensorflow",
            "app/task.py:8 needs the package tensorflow, which is not installed here: pip install "
            '"tensorflow-cpu>=2.16" (Keras\'s default backend), or run Keras on torch: pip '
            'install "torch==2.13.0" and set KERAS_BACKEND=torch',
        ),
        (
            "pytorch",
            "torch",
            "app/task.py:6 needs the package torch, which is not installed here: pip install "
            '"torch==2.13.0" (any torch >= 2.2 works: for a CPU build ',
        ),
    ],
    ids=["keras", "keras-backend", "torch"],
)
def test_a_missing_framework_is_named_with_its_install_line(tmp_path, framework, hidden, expected):
    create_project(tmp_path / "app", framework)
    error = one_error_line(roost_without(hidden, "run", "app", "--no-plot", cwd=tmp_path))
    assert error.startswith(expected), error


PROJECT = {
    "pyproject.toml": """
        [project]
        name = "needy"
        [tool.roost.components]
        client = "needy_app.client:client_fn"
        strategy = "needy_app.server:make_strategy"
    """,
    "needy_app/__init__.py": "",
    "needy_app/server.py": """
        import roost

        def make_strategy(run_config):
            return roost.FedAvg()
    """,
    "needy_app/client.py": """
        import roost
        from needy_app import model

        def client_fn(context):
            raise AssertionError("never reached: the import fails first")
    """,
}


def write_project(root: Path, model_source: str) -> Path:
    for name, text in {**PROJECT, "needy_app/model.py": model_source}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_a_package_that_does_not_exist_is_named_before_the_run_starts(tmp_path, capsys):
    project = write_project(tmp_path / "needy", "import numpy\nimport roost_absent_package.sub\n")
    assert main(["run", str(project), "--no-plot"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "roost: error: needy_app/model.py:2 needs the package roost_absent_package, which is not "
        "installed here: pip install roost_absent_package (if its package is named otherwise, "
        "install that one)"
    ]
    assert "rounds" not in out  # refused before the run's first line


def test_a_module_missing_from_the_project_itself_is_not_a_package_to_install(tmp_path, capsys):
    project = write_project(tmp_path / "needy", "import needy_app.helpers\n")
    assert main(["run", str(project), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "no module 'needy_app.helpers' in" in err and "pip install" not in err


FLOWER_PROJECT = {
    "pyproject.toml": """
        [project]
        name = "unsupported-app"
        [tool.flwr.app.components]
        serverapp = "unsupported_app.server_app:app"
        clientapp = "unsupported_app.client_app:app"
        [tool.flwr.app.config]
        num-server-rounds = 1
        [tool.flwr.federations]
        default = "local"
        [tool.flwr.federations.local]
        options.num-supernodes = 2
    """,
    "unsupported_app/__init__.py": "",
    "unsupported_app/client_app.py": """
        from flwr.clientapp import ClientApp

        app = ClientApp()
    """,
}


@pytest.mark.parametrize(
    ("line", "unsupported"),
    [
        (
            "from flwr.serverapp.strategy import FedAvg, "
            "DifferentialPrivacyServerSideAdaptiveClipping",
            "flwr.serverapp.strategy.DifferentialPrivacyServerSideAdaptiveClipping is not "
            "supported by roost's Flower layer; "
            "flwr.serverapp.strategy provides: Bulyan, ",
        ),
        (
            "from flwr.serverapp.workflow import SecAggPlusWorkflow",
            "flwr.serverapp.workflow is not supported by roost's Flower layer; it provides "
            "flwr.app, ",
        ),
    ],
    ids=["name", "module"],
)
def test_an_unsupported_flower_name_is_one_line_saying_what_to_do(
    tmp_path, capsys, line, unsupported
):
    server_app = f"from flwr.serverapp import ServerApp\n{line}\n\napp = ServerApp()\n"
    files = {**FLOWER_PROJECT, "unsupported_app/server_app.py": server_app}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    assert main(["run", str(tmp_path), "--no-plot"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"roost: error: unsupported_app/server_app.py:2: {unsupported}")
    assert err[0].endswith("; import one of those instead, or run this project on Flower itself")


def test_an_app_module_importing_a_missing_package_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "needy_module.py").write_text("import roost_absent_package\nclient_fn = None\n")
    assert main(["simulate", "--app", "needy_module:client_fn"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "roost: error: needy_module.py:1 needs the package roost_absent_package, which is not "
        "installed here: pip install roost_absent_package (if its package is named otherwise, "
        "install that one)"
    ]
