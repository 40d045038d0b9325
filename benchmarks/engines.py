"""roost's engines against Flower 1.42 and a plain loop, side by side, in one invocation.

    python benchmarks/engines.py                          # every scenario and runner (minutes)
    python benchmarks/engines.py --scenarios digits-100 --runners vectorized,loop,flower
    python benchmarks/engines.py --no-flower              # roost and the loop only
    python benchmarks/engines.py --scenarios seed,seed-100  # the seed tutorial's Keras workload
    python benchmarks/engines.py --scenarios tutorial,tutorial-tf  # the tutorial's code unchanged

Scenarios (see `workloads.py`; all FedAvg, local SGD, batch 10, lr 0.1, 1 epoch):
  digits-100   softmax regression on scikit-learn's digits, 100 IID clients, all train, 5 rounds
  digits-1000  the same with 1,000 clients
  cnn          a CIFAR-shaped CNN on synthetic 3×32×32 data, 1,000 users × 50 samples,
               cohort 50, 3 rounds
and the seed tutorial's own code (see `seed_run.py`: Keras ANN, Adam, `steps_per_epoch=3`,
10,000 CIFAR-shaped images, every client training and half evaluating each round):
  seed         5 clients, 5 rounds (the tutorial's sizes)
  seed-100     100 clients, 10 rounds
  tutorial     5 clients, 5 rounds, whole epochs (57 steps): the tutorial's code unchanged
  tutorial-tf  the same on Keras' default backend, TensorFlow

Runners: roost's `vectorized`, `sequential`, `process` and `ray` engines training a `roost.Task`;
`numpy` (digits only): roost's sequential engine with NumPy clients, so the process never imports
torch — the same arithmetic in float32;
`flower` (Flower 1.42's `run_simulation` on Ray, 1 CPU per client, its FedAvg and a NumPyClient);
and `loop`, a plain single-process loop doing the same arithmetic (nn.Module + torch.optim, one
client after another, FedAvg by hand): the compute limit. All runners start from the same model
and train every client on the same data in the same batch order.

For the seed scenarios: `flower` is the tutorial's script on Flower 1.42; `default` the same
script with its imports changed to `roost.compat.flwr` (a client built per instruction), on the
engine roost chooses when the script names none (`roost.engines.choice`); `sequential` the same
on `engine="sequential"`; `process` (tutorial scenarios) on `engine="process"`; `warm` the
sequential runner plus `warm_clients=True`; `vectorized` the tutorial's model as a
`roost.tasks.KerasTask`; and `loop` one Keras model reused for every client (the compute
limit). Keras runs on its torch backend, except in `tutorial-tf`, which runs on Keras' default
backend, TensorFlow.

Every run is a fresh process, with `OMP_WAIT_POLICY=PASSIVE` unless the environment sets it: on
a machine shared with other work, OpenMP threads that spin while they wait (the default) made
torch's parallel kernels, and so every runner, 2–10× slower from one invocation to the next (the
loop most, its kernels being many and small). Columns:
  wall s      whole-process wall time: interpreter start, imports, Ray start-up, the run, exit
  run s       the simulation call alone (inside the process)
  peak MiB    peak memory of the process and all its children (PSS, sampled every 0.5 s)
  accuracy    of the final global model on held-out data
  ×flower     Flower's time / this runner's time (wall, then run)
  ÷loop       this runner's run time / the loop's (1.0 = the compute limit)

Flower is installed on first use into its own virtual environment (benchmarks/.flower-venv, with
the CPU build of torch 2.13.0 installed first so no CUDA build is pulled, and Keras). When that
fails (no network, no wheel), the table is printed without Flower. Needs psutil.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
FLOWER_VENV = HERE / ".flower-venv"
FLOWER_VERSION = "1.42.0"
RUNNERS = (
    "vectorized",
    "numpy",
    "default",
    "sequential",
    "warm",
    "process",
    "ray",
    "flower",
    "loop",
)
SCENARIOS = ("digits-100", "digits-1000", "cnn", "seed", "seed-100", "tutorial", "tutorial-tf")
SEED_SCENARIOS = ("seed", "seed-100", "tutorial", "tutorial-tf")
SEED_RUNNERS = ("flower", "default", "sequential", "warm", "vectorized", "loop")
TUTORIAL_RUNNERS = (
    "flower",
    "default",
    "sequential",
    "process",
)  # its whole epochs: no KerasTask twin
# Keras' backend per scenario: torch, except in tutorial-tf: Keras' default backend, TensorFlow.
KERAS_BACKENDS = {scenario: "torch" for scenario in SCENARIOS} | {"tutorial-tf": "tensorflow"}


def flower_python(venv: Path) -> Path | None:
    """The Python of Flower's virtual environment, created and filled on first use; None (and a
    line saying why) when it cannot be set up, so the other columns still come."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import flwr, torch, sklearn, keras; print(flwr.__version__)"]
    env = {**os.environ, "KERAS_BACKEND": "torch"}  # Keras' default backend is not installed
    if python.exists():
        done = subprocess.run(check, capture_output=True, text=True, env=env)
        if done.returncode == 0 and done.stdout.strip() == FLOWER_VERSION:
            return python
    print(f"installing Flower {FLOWER_VERSION} into {venv} (first run only) ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, "torch==2.13.0"],  # the CPU build, before flwr's dependencies
        [*pip, f"flwr[simulation]=={FLOWER_VERSION}", "scikit-learn", "keras", "psutil"],
        check,
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"Flower could not be set up ({last}); its column is left out", flush=True)
            return None
    return python


def _tree_memory(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(command: list[str], timeout: float, backend: str = "torch") -> dict:
    """Run `command`; return its JSON line plus whole-process wall time and peak memory.

    The exit is noticed within 10 ms (wall time is exact to that); memory is sampled every 0.5 s
    (reading PSS costs CPU) and completed by the process's own peak RSS, which the kernel reports
    when it is reaped, so a run shorter than one sample still has a peak.
    """
    # Ray's workers (the ray engine's and Flower's) import the workloads from here.
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "KERAS_BACKEND": backend}
    # OpenMP threads that wait by spinning turn every other process on a shared machine into a
    # many-fold slowdown of torch's parallel kernels; waiting threads sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=err, text=True)
        watched = psutil.Process(child.pid)
        peak, next_sample = 0, started + 0.05
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                now = time.perf_counter()
                if now - started > timeout:
                    raise TimeoutError(f"{' '.join(command)} ran longer than {timeout:g} s")
                if now >= next_sample:
                    peak = max(peak, _tree_memory(watched))
                    next_sample = now + 0.5
                time.sleep(0.01)
        except BaseException:
            for member in [*watched.children(recursive=True), watched]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.kill()
            child.wait()
            raise
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        peak = max(peak, usage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "peak_mib": peak / 2**20}


def run_matrix(
    scenarios: list[str], runners: list[str], flower: Path | None, timeout: float
) -> dict:
    results: dict[tuple[str, str], dict] = {}
    for scenario in scenarios:
        if scenario not in SEED_SCENARIOS:
            # The initial model is made once with torch, untimed, for runners that never import it.
            prepare = [sys.executable, str(HERE / "engine_run.py"), scenario, "prepare"]
            subprocess.run(prepare, cwd=HERE, check=True)
        for runner in runners:
            if not applies(scenario, runner) or (runner == "flower" and flower is None):
                continue
            python = str(flower) if runner == "flower" else sys.executable
            if scenario in SEED_SCENARIOS:
                command = [python, str(HERE / "seed_run.py"), scenario, runner]
            elif runner == "flower":
                command = [python, str(HERE / "flower_run.py"), scenario]
            else:
                command = [python, str(HERE / "engine_run.py"), scenario, runner]
            print(f"  {scenario:<12} {runner:<11} ...", end=" ", flush=True)
            try:
                results[scenario, runner] = measure(command, timeout, KERAS_BACKENDS[scenario])
                print(f"{results[scenario, runner]['wall_s']:.1f} s", flush=True)
            except (RuntimeError, TimeoutError) as error:
                print(f"failed: {str(error).splitlines()[-1]}", flush=True)
    return results


def applies(scenario: str, runner: str) -> bool:
    """Whether `runner` has a version of `scenario` (NumPy: softmax regression only; warm: the
    seed's own client only; the seed scenarios: no process or Ray rows; the tutorial unchanged:
    Flower and roost's script runners only)."""
    if scenario.startswith("tutorial"):
        return runner in TUTORIAL_RUNNERS
    if scenario in SEED_SCENARIOS:
        return runner in SEED_RUNNERS
    return runner not in ("warm", "default") and not (runner == "numpy" and scenario == "cnn")


def table(results: dict, scenarios: list[str], runners: list[str]) -> str:
    header = (
        f"{'scenario':<12} {'runner':<11} {'wall s':>8} {'run s':>8} {'peak MiB':>9} "
        f"{'accuracy':>9} {'×flower wall':>13} {'×flower run':>12} {'÷loop run':>10}"
    )
    lines = [header, "-" * len(header)]
    for scenario in scenarios:
        flower = results.get((scenario, "flower"))
        loop = results.get((scenario, "loop"))
        for runner in runners:
            row = results.get((scenario, runner))
            if not applies(scenario, runner):
                continue
            if row is None:
                lines.append(f"{scenario:<12} {runner:<11} {'(failed or skipped)':>27}")
                continue
            vs_wall = f"{flower['wall_s'] / row['wall_s']:.1f}" if flower else "-"
            vs_run = f"{flower['run_s'] / row['run_s']:.1f}" if flower else "-"
            vs_loop = f"{row['run_s'] / loop['run_s']:.2f}" if loop else "-"
            lines.append(
                f"{scenario:<12} {runner:<11} {row['wall_s']:>8.2f} {row['run_s']:>8.2f} "
                f"{row['peak_mib']:>9.0f} {row['accuracy']:>9.4f} {vs_wall:>13} {vs_run:>12} "
                f"{vs_loop:>10}"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--runners", default=",".join(RUNNERS), help=f"comma-separated, from {', '.join(RUNNERS)}"
    )
    parser.add_argument("--no-flower", action="store_true", help="skip Flower")
    parser.add_argument(
        "--flower-venv",
        type=Path,
        default=FLOWER_VENV,
        help="Flower's virtual environment (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    runners = [r for r in args.runners.split(",") if r and not (args.no_flower and r == "flower")]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    for name in runners:
        if name not in RUNNERS:
            parser.error(f"unknown runner {name!r}")
    flower = flower_python(args.flower_venv) if "flower" in runners else None
    print(f"{os.cpu_count()} CPU cores; each run in a fresh process:", flush=True)
    results = run_matrix(scenarios, runners, flower, args.timeout)
    print()
    print(table(results, scenarios, runners))
    if args.json:
        args.json.write_text(
            json.dumps({f"{s}/{r}": row for (s, r), row in results.items()}, indent=1)
        )


if __name__ == "__main__":
    main()
