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
import json
import os
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

_FLOWER_SIDE = """
import json, sys, time
started = time.perf_counter()
import numpy as np
import flwr.serverapp.strategy as strategies
from flwr.simulation import run_simulation

app_dir, nodes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, app_dir)
captured = {}
original_start = strategies.FedAvg.start

def start(self, *args, **kwargs):  # the runner records the result; the app is untouched
    result = original_start(self, *args, **kwargs)
    captured["arrays"] = result.arrays.to_numpy_ndarrays()
    return result

strategies.FedAvg.start = start
import importlib, tomllib
config = tomllib.loads(open(app_dir + "/pyproject.toml").read())["tool"]["flwr"]["app"]
def load(reference):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
server_app = load(config["components"]["serverapp"])
client_app = load(config["components"]["clientapp"])
run_started = time.perf_counter()
run_simulation(server_app=server_app, client_app=client_app, num_supernodes=nodes,
               backend_config={"client_resources": {"num_cpus": 1}})
run_s = time.perf_counter() - run_started
np.savez(out, *captured["arrays"])
print(json.dumps({"run_s": run_s, "import_s": run_started - started}))
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


def run_side(python: Path, code: str, app: Path, nodes: int, out: Path, env: dict) -> dict:
    wall, stdout = timed([str(python), "-c", code, str(app), str(nodes), str(out)], env)
    report = json.loads(stdout.strip().splitlines()[-1])
    report["wall_s"] = wall
    with np.load(out) as data:
        report["arrays"] = [data[key] for key in sorted(data.files, key=lambda k: int(k[4:]))]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", type=Path, default=DEFAULT_APP)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--flower-venv", type=Path, default=FLOWER_VENV)
    parser.add_argument("--skip-flwr-run", action="store_true", help="skip timing `flwr run`")
    args = parser.parse_args()
    app = args.app.resolve()
    flower = flower_python(args.flower_venv)
    roost_env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    flower_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as scratch:
        roost = run_side(
            Path(sys.executable), _ROOST_SIDE, app, args.nodes, Path(scratch, "r.npz"), roost_env
        )
        flwr = run_side(flower, _FLOWER_SIDE, app, args.nodes, Path(scratch, "f.npz"), flower_env)
    difference = max(
        float(np.abs(a - b).max()) for a, b in zip(roost["arrays"], flwr["arrays"], strict=True)
    )
    rows = [
        ("roost run (sequential)", roost["wall_s"], roost["run_s"]),
        ("Flower 1.42 run_simulation", flwr["wall_s"], flwr["run_s"]),
    ]
    if not args.skip_flwr_run:
        flwr_cli = flower.parent / "flwr"
        wall, _ = timed([str(flwr_cli), "run", str(app)], flower_env)
        rows.append(("Flower 1.42 `flwr run`", wall, float("nan")))
    print(
        f"app {app.name}, {args.nodes} nodes; largest |roost - Flower| in the final arrays: "
        f"{difference:.3g} ({'same to 1e-6' if difference <= 1e-6 else 'DIFFERENT'})"
    )
    print("| runner | wall s | run s |\n|---|---:|---:|")
    for name, wall, run in rows:
        print(f"| {name} | {wall:.2f} | {run:.2f} |")


if __name__ == "__main__":
    main()
