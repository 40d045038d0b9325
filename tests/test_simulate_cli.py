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
