"""`roost simulate`: the bundled digits demo, its accuracy, its determinism, its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roost.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roost.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_reaches_accuracy_and_is_byte_identical_by_seed(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        done = run_cli("simulate", "--clients", "10", "--rounds", "5", "--out", str(out))
        assert done.returncode == 0, done.stderr
    history = json.loads((first / "history.json").read_text())
    final_round, final_accuracy = history["metrics_centralized"]["accuracy"][-1]
    assert final_round == 5
    assert final_accuracy >= 0.85
    assert [r["fit_results"] for r in history["rounds"]] == [10] * 5
    assert set(history) >= {
        "losses_distributed",
        "losses_centralized",
        "metrics_distributed_fit",
        "metrics_distributed",
        "metrics_centralized",
    }
    assert (first / "history.json").read_bytes() == (second / "history.json").read_bytes()
    assert (first / "model.npz").read_bytes() == (second / "model.npz").read_bytes()
    with np.load(first / "model.npz", allow_pickle=False) as model:
        assert [model[name].shape for name in sorted(model.files)] == [(64, 10), (10,)]
    assert "summary" in done.stdout


def test_a_different_seed_gives_a_different_run(tmp_path: Path) -> None:
    for seed in ("1", "2"):
        assert (
            main(
                [
                    "simulate",
                    "--quiet",
                    "--rounds",
                    "1",
                    "--seed",
                    seed,
                    "--out",
                    str(tmp_path / seed),
                ]
            )
            == 0
        )
    assert (tmp_path / "1" / "model.npz").read_bytes() != (
        tmp_path / "2" / "model.npz"
    ).read_bytes()


def test_partial_cohorts_and_options(tmp_path: Path) -> None:
    code = main(
        [
            "simulate",
            "--quiet",
            "--clients",
            "20",
            "--rounds",
            "2",
            "--fraction-fit",
            "0.25",
            "--local-epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "0.3",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["fit_results"] for r in history["rounds"]] == [5, 5]


@pytest.mark.parametrize(
    "args",
    [["--clients", "0"], ["--fraction-fit", "2"], ["--lr", "-1"], ["--rounds", "x"]],
)
def test_bad_options_are_refused_with_a_message(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", *args])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_more_clients_than_samples_is_a_clear_error(capsys) -> None:
    assert main(["simulate", "--quiet", "--clients", "5000", "--rounds", "1"]) == 2
    assert "use fewer clients" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"roost {version('roost')}"


APP_MODULE = """
import numpy as np
import roost


class Constant(roost.Client):
    def __init__(self, partition_id):
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        return [parameters[0] + self.partition_id], 1, {}

    def evaluate(self, parameters, config):
        return float(parameters[0].sum()), 1, {}


def client_fn(context):
    return Constant(context.partition_id)


app = roost.App(client_fn=client_fn, strategy=lambda: roost.FedAvg(min_available_clients=2))
"""


def test_simulate_runs_your_app(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cli_test_app.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("cli_test_app:app", "cli_test_app:client_fn"):
        out = tmp_path / spec.replace(":", "-")
        args = ["simulate", "--quiet", "--app", spec, "--clients", "3", "--rounds", "2"]
        assert main([*args, "--out", str(out)]) == 0
        with np.load(out / "model.npz", allow_pickle=False) as model:
            # FedAvg of partitions 0, 1, 2 adding their id, twice: 2 × mean(0, 1, 2) = 2.
            np.testing.assert_allclose(model["arr_0"], [2.0, 2.0])


def test_simulate_refuses_strategy_flags_with_an_app(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "cli_test_app.py").write_text(APP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["simulate", "--quiet", "--app", "cli_test_app:app", "--strategy", "fedmedian"]
    assert main(args) == 2
    assert "your roost.App's strategy" in capsys.readouterr().err
