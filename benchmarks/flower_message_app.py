"""One Message-API app on Flower 1.42 and on roost: the same final arrays, and the time taken.

    python benchmarks/flower_message_app.py [--app tests/flower_apps/numpy_app] [--nodes 3]

Runs the app's files unchanged, each runner in a fresh process:

- **roost**: `roost.compat.flwr.project.run_project(APP)` (what `roost run APP` calls);
- **Flower 1.42, run_simulation**: `flwr.simulation.run_simulation` with the app's ServerApp and
  ClientApp, in Flower's own virtual environment (created on first use in
  `benchmarks/.flower-msg-venv` with `pip install flwr[simulation]==1.42.*`; `--flower-venv`
  points at another, e.g. the `benchmarks/.flower-venv` of `engines.py`);
- **Flower 1.42, `flwr run APP`**: the whole command, timed from the outside.

Every node trains in every round (the app's `fraction-train` is 1.0), so both frameworks see the
same cohorts; the script reports the largest difference between the final arrays (Flower's are
captured by wrapping the strategy's `start` in the runner process, not in the app) and prints one
table row per runner: whole-process wall time and the run's own time. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_APP = ROOT / "tests" / "flower_apps" / "numpy_app"
FLOWER_VENV = HERE / ".flower-msg-venv"
FLOWER_SPEC = "flwr[simulation]==1.42.*"

# Put on PYTHONPATH for `flwr run`: every Python process Flower starts imports it, and the one
# that runs the ServerApp records the strategy's final arrays (the app's files stay untouched).
_CAPTURE = """
import os
if os.environ.get("ROOST_CAPTURE_ARRAYS"):
    import numpy as np
    import flwr.serverapp.strategy as strategies

    original_start = strategies.FedAvg.start

    def start(self, *args, **kwargs):
        result = original_start(self, *args, **kwargs)
        np.savez(os.environ["ROOST_CAPTURE_ARRAYS"], *result.arrays.to_numpy_ndarrays())
        return result

    strategies.FedAvg.start = start
"""

_ROOST_SIDE = """
import json, sys, time
started = time.perf_counter()
import numpy as np
from roost.compat.flwr.project import run_project

app_dir, nodes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run_started = time.perf_counter()
history = run_project(app_dir, num_nodes=nodes, seed=0)
run_s = time.perf_counter() - run_started
np.savez(out, *history.parameters)
print(json.dumps({"run_s": run_s, "import_s": run_started - started}))
"""


def flower_python(venv: Path) -> Path:
    """The Python of a virtual environment with Flower 1.42 (made on first use)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import flwr, sys; sys.exit(flwr.__version__[:4] != '1.42')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {FLOWER_SPEC} into {venv} (first run only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", FLOWER_SPEC], check=True)
    return python


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `command`; return its wall time and its stdout (raise with its stderr on failure)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-4000:]}")
    return wall, done.stdout


def run_roost(app: Path, nodes: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    wall, stdout = timed([sys.executable, "-c", _ROOST_SIDE, str(app), str(nodes), str(out)], env)
    report = json.loads(stdout.strip().splitlines()[-1])
    return {**report, "wall_s": wall, "arrays": load_arrays(out)}


def run_flower(flower: Path, app: Path, nodes: int, scratch: Path) -> dict:
    """`flwr run --stream` on a copy of the app (Flower rewrites a project's pyproject.toml to move
    its federations into its own configuration, kept under `scratch` via FLWR_HOME)."""
    copy = scratch / app.name
    shutil.copytree(app, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "capture").mkdir()
    (scratch / "capture" / "sitecustomize.py").write_text(_CAPTURE)
    out = scratch / "flower.npz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PATH=f"{flower.parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(scratch / "capture"),
        FLWR_HOME=str(scratch / "flwr-home"),
        ROOST_CAPTURE_ARRAYS=str(out),
    )
    config = f"num-supernodes={nodes}"
    command = [str(flower.parent / "flwr"), "run", str(copy), "--stream"]
    try:
        wall, _ = timed([*command, "--federation-config", config], env)
    finally:
        stop_started_by(str(scratch))
    return {"wall_s": wall, "run_s": float("nan"), "arrays": load_arrays(out)}


def stop_started_by(marker: str) -> None:
    """Stop what `flwr run` left running (its local SuperLink stays up for the next run): the
    processes whose command line names this run's own scratch directory."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in command_line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGTERM)


def load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{index}"] for index in range(len(data.files))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", type=Path, default=DEFAULT_APP)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--flower-venv", type=Path, default=FLOWER_VENV)
    args = parser.parse_args()
    app = args.app.resolve()
    flower = flower_python(args.flower_venv)
    with tempfile.TemporaryDirectory() as scratch:
        roost = run_roost(app, args.nodes, Path(scratch, "roost.npz"))
        flwr = run_flower(flower, app, args.nodes, Path(scratch))
    difference = max(
        float(np.abs(a - b).max()) for a, b in zip(roost["arrays"], flwr["arrays"], strict=True)
    )
    verdict = "same to 1e-6" if difference <= 1e-6 else "DIFFERENT"
    print(
        f"app {app.name}, {args.nodes} nodes: largest |roost - Flower| {difference:.3g} ({verdict})"
    )
    print("| runner | wall s | run s |\n|---|---:|---:|")
    print(f"| Flower 1.42, `flwr run --stream` | {flwr['wall_s']:.2f} | n/a |")
    print(f"| roost, `run_project` (sequential) | {roost['wall_s']:.2f} | {roost['run_s']:.2f} |")


if __name__ == "__main__":
    main()
