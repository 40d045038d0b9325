"""What a run shows: progress lines, --quiet, the failure digest and summary, the exit status
when nothing trained, and the defects a new user met (--out, ports, option errors, plot)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from roost.cli import main
from roost.cli.progress import duration, round_summary, significant
from roost.core.types import CLIENT_FN_RAISED, Failure
from roost.server.history import History
from roost.tracking import RoundReport
from roost.tracking.failures import FailureDigest

FAILING_APP = """
import numpy as np
import roost


class Broken(roost.Client):
    def __init__(self, partition_id):
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        if self.partition_id % 2 == 0 or config.get("all_fail"):
            raise ValueError("bad batch")
        if self.partition_id == 1:
            raise KeyError("label")
        return [parameters[0] + 1], 1, {}

    def evaluate(self, parameters, config):
        return 0.5, 1, {"accuracy": 0.25}


def client_fn(context):
    return Broken(context.partition_id)


def all_fail(server_round):
    return {"all_fail": True}


some = roost.App(
    client_fn=client_fn,
    strategy=lambda: roost.FedAvg(initial_parameters=[np.zeros(2)]),
)
every = roost.App(
    client_fn=client_fn,
    strategy=lambda: roost.FedAvg(initial_parameters=[np.zeros(2)], on_fit_config_fn=all_fail),
)
"""


@pytest.fixture
def failing_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a module holding apps whose clients fail (unique per test: no stale import)."""
    name = f"failing_app_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(FAILING_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_progress_is_one_plain_unwrapped_line_per_round(capsys) -> None:
    args = ["simulate", "--clients", "3", "--rounds", "2", "--engine", "sequential"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rounds = [line for line in lines if line.startswith("round ")]
    assert [line.split(" (")[0] for line in rounds] == ["round 1/2", "round 2/2"]
    assert "elapsed, ETA" in rounds[0]
    assert "fit 3 ok · evaluate 3 ok · loss_distributed " in rounds[0]
    assert all(len(line) > 100 for line in rounds)  # long lines stay whole


def test_quiet_shows_no_progress(capsys) -> None:
    assert main(["simulate", "--quiet", "--clients", "3", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "round 1/2" not in out
    assert "summary" in out


def test_quiet_and_verbose_contradict(capsys) -> None:
    assert main(["simulate", "--quiet", "--verbose", "--rounds", "1"]) == 2
    assert "--quiet and --verbose" in capsys.readouterr().err


def test_failures_are_digested_summarised_and_the_run_exits_0(
    failing_app: str, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    caplog.set_level(logging.WARNING, logger="roost")
    args = ["simulate", "--app", f"{failing_app}:some", "--clients", "5", "--rounds", "2"]
    assert main(args) == 0  # client 3 trained every round
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "bad batch" in w]) == 1  # 6 failures, logged once
    assert len([w for w in warnings if "KeyError" in w]) == 1
    out = capsys.readouterr().out
    assert "failure summary: 8 failure(s), 2 distinct error(s)" in out
    assert "6 × error: ValueError: bad batch (clients 0, 2, 4 in rounds 1–2)" in out
    assert "2 × error: KeyError: 'label' (clients 1 in rounds 1–2)" in out
    assert "fit 1 ok, 4 failed" in out


def test_a_round_in_which_every_fit_failed_exits_non_zero(failing_app: str, capsys) -> None:
    args = ["simulate", "--quiet", "--app", f"{failing_app}:every", "--clients", "3"]
    assert main([*args, "--rounds", "2"]) == 1
    err = capsys.readouterr().err
    assert "every fit failed in round(s) 1–2" in err
    assert "--allow-failures" in err
    assert main([*args, "--rounds", "1", "--allow-failures"]) == 0


def test_the_digest_shows_a_traceback_once_and_names_client_fn() -> None:
    def build() -> None:
        raise RuntimeError("no data for partition")

    try:
        build()
    except RuntimeError as error:
        failures = [Failure.from_exception(str(i), error, in_client_fn=True) for i in range(3)]
    assert failures[0].reason == CLIENT_FN_RAISED + "RuntimeError: no data for partition"
    assert "in build" in failures[0].detail
    logger = logging.getLogger("roost")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        with FailureDigest() as digest:
            for failure in failures:
                logger.warning("%s: %s", "fit_round 4", failure)
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 1
    assert seen[0].startswith("fit_round 4: client 0: error: client_fn raised RuntimeError")
    assert "Traceback (most recent call last)" in seen[0]
    assert digest.summary_lines() == [
        "3 × error: client_fn raised RuntimeError: no data for partition "
        "(clients 0, 1, 2 in rounds 4)"
    ]


def test_out_that_is_a_file_is_refused_before_the_run(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.txt"
    target.write_text("not a directory")
    assert main(["simulate", "--rounds", "1", "--out", str(target)]) == 2
    captured = capsys.readouterr()
    assert "is a file; give a directory" in captured.err
    assert "round 1" not in captured.out  # refused before any round ran
    beneath = target / "out"
    assert main(["server", "--rounds", "1", "--out", str(beneath)]) == 2
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server", "--address", "127.0.0.1:99999"], "port must be a number in 1-65535"),
        (["server", "--address", "127.0.0.1:0"], "port must be a number in 1-65535"),
        (
            ["client", "--server", "nohost", "--partition-id", "0", "--num-partitions", "2"],
            "expected host:port",
        ),
        (["simulate", "--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
        (["simulate", "--rounds", "two"], "argument --rounds: expected an integer, got 'two'"),
    ],
)
def test_option_errors_are_one_useful_line(args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert message in err[0]
    assert err[1:] == [f"(see 'roost {args[0]} --help' for the options)"]


def _history(tmp_path: Path) -> Path:
    history = History()
    for server_round in (1, 2):
        history.add_loss_distributed(server_round, 1.0 / server_round)
        history.add_metrics_distributed(server_round, {"accuracy": 0.5, "f1": 0.4})
    path = tmp_path / "history.json"
    path.write_text(history.to_json())
    return path


def test_plot_with_an_unknown_metric_lists_the_metrics(tmp_path: Path, capsys) -> None:
    path = _history(tmp_path)
    assert main(["plot", str(path), "--metric", "acc"]) == 2
    err = capsys.readouterr().err
    assert "has no metric 'acc'; its metrics: accuracy, f1" in err
    assert not (tmp_path / "plot.png").exists()


def test_plot_without_matplotlib_is_one_clear_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_matplotlib(*args: object, **kwargs: object) -> bytes:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr("roost.plotting.render_plot", no_matplotlib)
    assert main(["plot", str(_history(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "roost: error: roost plot draws with matplotlib, which is not installed: "
        "pip install matplotlib"
    ]


def test_numbers_are_shown_to_four_significant_digits() -> None:
    assert [significant(v) for v in (0.912345, 12345.678, 3.0, 1e-7)] == [
        "0.9123",
        "1.235e+04",
        "3",
        "1e-07",
    ]
    assert [duration(s) for s in (4.24, 185, 3720)] == ["4.2 s", "3 min 05 s", "1 h 02 min"]
    record = RoundReport(
        2, 5, 1.0, {"fit_results": 3.0, "fit_failures": 1.0, "centralized_accuracy": 0.87654}
    )
    assert round_summary(record) == "fit 3 ok, 1 failed · centralized_accuracy 0.8765"
