"""`roost simulate --strategy NAME`: every preset, its options, attacks and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.cli import main
from roost.strategy import PRESETS

OPTIONS = {
    "fedavgm": ["--server-lr", "1.0", "--server-momentum", "0.5"],
    "fedadam": ["--server-lr", "0.05", "--beta1", "0.8", "--beta2", "0.9", "--tau", "1e-3"],
    "fedprox": ["--proximal-mu", "0.1"],
    "fedsgd": ["--server-lr", "2.0"],
    "fedtrimmedavg": ["--trim-beta", "0.1"],
    "krum": ["--num-malicious", "1", "--num-keep", "2"],
    "qfedavg": ["--q", "0.5"],
    "fedweightedavg": ["--weight-metric", "train_accuracy"],
    # DP-FedAvg is FedAvg under --dp central; σ = 0 keeps the demo's accuracy check meaningful.
    "dpfedavg": ["--noise-multiplier", "0", "--clip-norm", "10", "--sampling", "fixed"],
}


def simulate(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    code = main(
        [
            "simulate",
            "--quiet",
            "--no-plot",
            "--clients",
            "5",
            "--rounds",
            "3",
            "--out",
            str(out),
            *args,
        ]
    )
    assert code == 0
    return json.loads((out / "history.json").read_text())


def accuracies(history: dict) -> list[float]:
    return [value for _, value in history["metrics_centralized"]["accuracy"]]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_strategy_runs_from_the_command_line(tmp_path: Path, name: str) -> None:
    history = simulate(tmp_path, "--strategy", name, *OPTIONS.get(name, []))
    accuracy = accuracies(history)
    assert accuracy[-1] > accuracy[0] + 0.2, accuracy
    if name == "dpfedavg":  # central DP withholds the counts (they reveal who took part)
        assert [r.get("withheld") for r in history["rounds"]] == [True, True, True]
    elif name in ("fedbuff", "fedasync"):  # a round is an aggregation, on the simulated clock
        assert [r["server_round"] for r in history["rounds"]] == [1, 2, 3]
        assert all(r["virtual_time"] > 0 for r in history["rounds"])
    else:
        assert [r["fit_results"] for r in history["rounds"]] == [5, 5, 5]


def test_default_strategy_is_fedavg_and_unchanged(tmp_path: Path) -> None:
    plain = simulate(tmp_path / "a")
    explicit = simulate(tmp_path / "b", "--strategy", "fedavg")
    assert plain == explicit


def test_clipping_options_change_the_run(tmp_path: Path) -> None:
    plain = accuracies(simulate(tmp_path / "a", "--strategy", "fedavg"))
    clipped = accuracies(simulate(tmp_path / "b", "--clip-norm", "0.05"))
    adaptive = accuracies(simulate(tmp_path / "c", "--clip-norm", "0.05", "--clip-quantile", "0.5"))
    assert clipped[-1] < plain[-1]  # a tiny bound slows training down
    assert clipped != adaptive


def test_attack_options_run_the_robustness_experiment(tmp_path: Path) -> None:
    attack = ["--clients", "10", "--attack", "signflip", "--attackers", "2", "--attack-scale", "10"]
    fedavg = accuracies(simulate(tmp_path / "a", *attack))
    median = accuracies(simulate(tmp_path / "b", *attack, "--strategy", "fedmedian"))
    assert fedavg[-1] < 0.3
    assert median[-1] > 0.7
    noisy = accuracies(simulate(tmp_path / "c", "--attack", "noise", "--attackers", "1"))
    flipped = accuracies(simulate(tmp_path / "d", "--attack", "labelflip", "--attackers", "1"))
    assert noisy != flipped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategy", "krum", "--trim-beta", "0.1"],
            "--trim-beta does not apply to --strategy krum",
        ),
        (["--strategy", "fedprox"], "needs --proximal-mu"),
        (["--clip-quantile", "0.5"], "--clip-quantile needs --clip-norm"),
        (["--attack", "signflip"], "--attack needs --attackers"),
        (["--attackers", "2"], "need --attack"),
        (["--attack", "scale", "--attackers", "9"], "--attackers 9 exceeds the 5 clients"),
        (["--strategy", "bulyan", "--num-malicious", "1"], "needs at least 7 clients"),
        (["--strategy", "fedadam", "--server-lr", "-1"], "must be > 0"),
        (["--strategy", "dpfedavg"], "--strategy dpfedavg needs --noise-multiplier"),
        (["--strategy", "fedavg", "--q", "0.5"], "--q does not apply to --strategy fedavg"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(capsys, args, message) -> None:
    code = main(["simulate", "--quiet", "--clients", "5", "--rounds", "1", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_unknown_strategy_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--strategy", "fedfoo"])
    assert "invalid choice: 'fedfoo'" in capsys.readouterr().err
