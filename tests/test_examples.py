"""The seed tutorial example (examples/seed_tutorial): simulation, and server + two clients as
three processes, on small sizes, with TensorFlow as the tutorial uses it (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from grpc_support import free_port

# Keras runs in the subprocesses only: checking it is installed without importing it here saves
# every pytest worker a TensorFlow import (Keras' default backend) at collection.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None, reason="keras is not installed"
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "seed_tutorial"

# The tutorial's own backend. Keras on torch is tested by the adapter, KerasTask, project and
# Flower-app tests; here each run starts TensorFlow in every process (and, for the three
# terminals, next to gRPC), as the tutorial's users run it.
BACKENDS = [
    pytest.param(
        "tensorflow",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(
                importlib.util.find_spec("tensorflow") is None,
                reason="tensorflow is not installed (pip install tensorflow-cpu)",
            ),
        ],
    ),
]


def example_env(tmp_path: Path, backend: str) -> dict[str, str]:
    """A hermetic environment: no real CIFAR-10 unless a test puts files in ROOST_DATA."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "ROOST_DATA": str(data),
        "KERAS_BACKEND": backend,
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "200",
    }


@pytest.fixture
def processes():
    """Start example scripts as processes; whatever is still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(script: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLE / script), *args],
                cwd=EXAMPLE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def _wait(process: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{log.name} did not finish:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    return text


@pytest.mark.parametrize("backend", BACKENDS)
def test_simulation_example_trains_on_the_stand_in(tmp_path: Path, processes, backend: str) -> None:
    out = tmp_path / "out"
    log = tmp_path / "simulation.log"
    process = processes(
        "simulation.py",
        "--num-clients",
        "2",
        "--num-images",
        "1000",
        "--rounds",
        "2",
        "--epochs",
        "1",
        "--out",
        str(out),
        env=example_env(tmp_path, backend),
        log=log,
    )
    text = _wait(process, log, timeout=600)
    assert "NOTICE: CIFAR-10 is not available" in text and "STAND-IN" in text
    history = json.loads((out / "history.json").read_text())
    # Two clients, two rounds: TensorFlow's start-up and tracing, not the rounds, take the time.
    assert [r["fit_results"] for r in history["rounds"]] == [2, 2]
    assert [r["evaluate_results"] for r in history["rounds"]] == [1, 1]
    accuracy = [value for _, value in history["metrics_distributed"]["accuracy"]]
    losses = [value for _, value in history["losses_distributed"]]
    assert losses[-1] < losses[0]
    assert accuracy[-1] > 0.3  # 10 classes: chance is 0.1
    assert (out / "plot.png").stat().st_size > 10_000
    with np.load(out / "model.npz", allow_pickle=False) as model:
        assert [model[f"arr_{i}"].shape for i in range(6)] == [
            (3072, 64),
            (64,),
            (64, 64),
            (64,),
            (64, 10),
            (10,),
        ]


def write_cifar_binary_files(folder: Path, images_per_batch: int) -> None:
    """CIFAR-10's binary layout (label byte, channel-major pixels) holding learnable images."""
    from roost.data import make_cifar_like

    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    x_all, y_all = make_cifar_like(images_per_batch * len(names), seed=0)  # one set of classes
    for index, name in enumerate(names):
        batch = slice(index * images_per_batch, (index + 1) * images_per_batch)
        x, y = x_all[batch], y_all[batch]
        pixels = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        records = np.concatenate([y[:, None].astype(np.uint8), pixels], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def _free_port() -> int:
    return free_port()


# The three terminals each start Keras: on torch, which starts in a fraction of TensorFlow's time
# (the simulation test above runs the tutorial's TensorFlow).
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch"])
def test_three_terminals_server_and_two_clients(tmp_path: Path, processes, backend: str) -> None:
    env = example_env(tmp_path, backend)
    # CIFAR-10 files on disk (small, made here): the example must use them, with no notice.
    write_cifar_binary_files(Path(env["ROOST_DATA"]) / "cifar-10-batches-bin", 400)
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    server_log = tmp_path / "server.log"
    server = processes(
        "server.py",
        "--address",
        address,
        "--rounds",
        "3",
        "--out",
        str(out),
        env=env,
        log=server_log,
    )
    clients = [
        processes(
            "client.py",
            "--server",
            address,
            "--partition-id",
            str(i),
            "--num-images",
            "1600",
            env=env,
            log=tmp_path / f"client{i}.log",
        )
        for i in range(2)
    ]
    server_text = _wait(server, server_log, timeout=600)
    for i, client in enumerate(clients):
        client_text = _wait(client, tmp_path / f"client{i}.log", timeout=60)
        assert "using CIFAR-10: the first 1600 of 2000 training images" in client_text
        assert "NOTICE" not in client_text
    assert "run finished 3 round(s)" in server_text
    history = json.loads((out / "history.json").read_text())
    assert [r["fit_results"] for r in history["rounds"]] == [2, 2, 2]
    assert [r["evaluate_results"] for r in history["rounds"]] == [2, 2, 2]
    losses = [value for _, value in history["losses_distributed"]]
    accuracy = [value for _, value in history["metrics_distributed"]["accuracy"]]
    assert losses[-1] < losses[0]
    assert accuracy[-1] > 0.3  # 10 classes: chance is 0.1
