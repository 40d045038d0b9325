"""A newcomer's first project works as the README, the tutorial and `roost new` say, in a fresh
environment.

One virtual environment (without the system's packages, as the README creates it) gets roost from
this checkout as the README's first command installs it (`pip install -e .`). Then, for each
framework: `roost new`, the install line it prints (run as printed, in a shell), the `roost run`
command of the tutorial (docs/tutorials/your-own-app.md) and the project's own test
(`pytest NAME`, as printed). The four frameworks
share the environment (a module fixture, one xdist group), numpy and scikit-learn first so their
lines are shown to work before torch is installed; the Keras project takes the install line that
runs Keras on torch, which the PyTorch project has just installed, rather than installing
TensorFlow too. pip reaches only the package index it is configured with.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fresh_venv")]

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["numpy", "sklearn", "pytorch", "keras"]
PLOT_NOTE = 'plot.png not written: matplotlib is not installed (pip install "roost[plot]"'


def shell(script: str, cwd: Path, environment: dict[str, str]) -> str:
    """Run `script` with bash as a user would type it; its output (stdout, then stderr)."""
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"$ {script}\n{output}"
    return output


@pytest.fixture(scope="module")
def fresh_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The variables of a shell in which a fresh venv with roost (from this checkout) is active."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    leaks = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "KERAS_BACKEND")
    environment = {key: value for key, value in os.environ.items() if key not in leaks}
    environment["VIRTUAL_ENV"] = str(venv)  # what `. venv/bin/activate` sets
    environment["PATH"] = os.pathsep.join([str(venv / "bin"), environment.get("PATH", "")])
    # pip byte-compiles every module it installs (torch's thousands: about 45 s of this test's
    # 3 minutes); Python compiles the few a run imports when it imports them. What is tested, the
    # printed commands run as printed, is the same either way.
    environment["PIP_COMPILE"] = "0"  # pip's --no-compile (PIP_NO_COMPILE=1 would mean --compile)
    shell("pip install -e .", ROOT, environment)
    where = shell("python -c 'import roost; print(roost.__file__)'", venv, environment)
    assert Path(where.strip()).is_relative_to(ROOT / "src")
    # The rest of the README's first command: roost's main job, the demo, as installed.
    demo = shell("roost simulate", venv.parent, environment)
    assert "round 5/5" in demo and "roost run summary" in demo, demo
    return environment


def printed(output: str, prefix: str) -> list[str]:
    """The commands `roost new` printed on its lines starting with `prefix`."""
    return [line[len(prefix) :].strip() for line in output.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_readmes_commands_work_in_a_fresh_environment(
    fresh_environment: dict[str, str], tmp_path: Path, framework: str
) -> None:
    name = f"app_{framework}"
    output = shell(f"roost new {name} --framework {framework}", tmp_path, fresh_environment)
    installs = printed(output, "install it:") + printed(output, "or:")
    # Keras: the line that runs it on torch (its other line installs TensorFlow instead).
    install = (
        next(line for line in installs if "KERAS_BACKEND" in line)
        if framework == "keras"
        else installs[0]
    )
    assert printed(output, "test it:") == [f"pytest {name}"]
    run = f"roost run {name} --run-config num-rounds=3 --out out"  # the tutorial's command
    script = " && ".join([install, run, f"pytest {shlex.quote(name)}"])
    output = shell(script, tmp_path, fresh_environment)

    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [record["fit_results"] for record in history["rounds"]] == [10, 10, 10]
    assert history["metrics_distributed"]["accuracy"][-1][1] > 0.5
    assert PLOT_NOTE in output  # the README installs no matplotlib, and the run says so
    assert "1 passed" in output and " warning" not in output  # the project's test, clean
