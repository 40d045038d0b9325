"""A resumed run keeps the settings it began with: a changed one is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import roost
from roost.cli import main
from roost.cli.new import create_project
from roost.compat.flwr.project import run_project
from roost.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
FLOWER_NUMPY_APP = ROOT / "tests" / "flower_apps" / "numpy_app"


def roost_cli(*args: object) -> int:
    return main([str(a) for a in args])


def error_line(capsys, *args: object) -> str:
    assert roost_cli(*args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("roost: error: ") and "\n" not in error
    return error


def test_simulate_refuses_a_resume_with_changed_settings(tmp_path, capsys):
    state = tmp_path / "state"
    base = ("simulate", "--clients", "6", "--engine", "sequential", "--state", state)
    assert roost_cli(*base, "--rounds", "2", "--quiet") == 0
    capsys.readouterr()
    line = error_line(capsys, *base, "--resume", "--rounds", "4", "--clients", "7", "--lr", "0.05")
    assert "--clients was 6, now 7" in line and "--lr was 0.5, now 0.05" in line
    line = error_line(capsys, *base, "--resume", "--rounds", "4", "--seed", "1")
    assert "--seed was 0, now 1" in line
    line = error_line(capsys, *base, "--resume", "--rounds", "4", "--engine", "vectorized")
    assert '--engine was "sequential", now "vectorized"' in line
    # Only the number of rounds may change; the resume says where it continues.
    assert roost_cli(*base, "--resume", "--rounds", "3", "--no-plot", "--out", tmp_path / "o") == 0
    assert "resuming after round 2" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "o" / "history.json").read_text())["rounds"]) == 3


class Constant(roost.Client):
    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        return [parameters[0] + 1.0], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def test_run_simulation_records_clients_seed_and_engine(tmp_path):
    def simulate(num_clients: int, seed: int, resume: bool = False) -> roost.History:
        return roost.run_simulation(
            lambda context: Constant(),
            num_clients,
            config=roost.ServerConfig(num_rounds=2 if resume else 1),
            seed=seed,
            state_dir=tmp_path,
            resume=resume,
        )

    simulate(3, seed=0)
    with pytest.raises(ConfigurationError, match="num_clients was 3, now 4"):
        simulate(4, seed=0, resume=True)
    with pytest.raises(ConfigurationError, match="seed was 0, now 5"):
        simulate(3, seed=5, resume=True)
    assert len(simulate(3, seed=0, resume=True).rounds) == 2


def test_run_refuses_a_project_resume_with_another_run_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "proj", "numpy")
    common = ("run", "proj", "--state", "state", "--quiet", "--run-config", "num-clients=3")
    assert roost_cli(*common, "num-rounds=1") == 0
    capsys.readouterr()
    line = error_line(capsys, *common, "num-rounds=2", "learning-rate=0.01", "--resume")
    assert "run-config learning-rate was" in line and "now 0.01" in line
    line = error_line(capsys, *common, "num-rounds=2", "--seed", "4", "--resume")
    assert "run-config seed was 0, now 4" in line
    assert roost_cli(*common, "num-rounds=2", "--resume") == 0


def test_a_flower_project_resume_keeps_its_run_config(tmp_path):
    state = tmp_path / "state"
    run_project(FLOWER_NUMPY_APP, num_nodes=2, seed=0, state_dir=state, run_config_overrides={})
    with pytest.raises(ConfigurationError, match=r"run-config lr was 0\.05, now 0\.5"):
        run_project(
            FLOWER_NUMPY_APP,
            num_nodes=2,
            seed=0,
            state_dir=state,
            resume=True,
            run_config_overrides={"num-server-rounds": 4, "lr": 0.5},
        )
    history = run_project(
        FLOWER_NUMPY_APP,
        num_nodes=2,
        seed=0,
        state_dir=state,
        resume=True,
        run_config_overrides={"num-server-rounds": 4},
    )
    assert len(history.rounds) == 4


def test_run_seed_makes_a_sampled_flower_run_reproducible(tmp_path, capsys):
    def run(seed: int, out: str) -> tuple[list, bytes]:
        args = ["run", FLOWER_NUMPY_APP, "--clients", "6", "--quiet", "--no-plot"]
        overrides = ["--run-config", "fraction-train=0.5", "num-server-rounds=3"]
        assert roost_cli(*args, *overrides, "--seed", seed, "--out", tmp_path / out) == 0
        history = json.loads((tmp_path / out / "history.json").read_text())
        return history["losses_distributed"], (tmp_path / out / "model.npz").read_bytes()

    assert run(0, "a") == run(0, "b")
    assert run(0, "a")[0] != run(1, "c")[0]


def test_run_seed_reaches_a_roost_projects_run_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "proj", "numpy")
    args = ("run", "proj", "--quiet", "--no-plot", "--run-config", "num-clients=3", "num-rounds=1")
    assert roost_cli(*args, "--seed", "7", "--state", "s") == 0
    capsys.readouterr()
    line = error_line(
        capsys, "run", "proj", "--run-config", "num-clients=3", "--state", "s", "--resume"
    )
    assert "run-config seed was 7, now 0" in line
