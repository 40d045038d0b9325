"""The command line's small courtesies: help, version, suggestions and messages in its own terms."""

from __future__ import annotations

import socket
import textwrap

import pytest

from roost.cli import main
from roost.cli.new import create_project
from roost.cli.report import history_table
from roost.server.history import History


def error_of(capsys, *args: object) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def refusal_of(capsys, *args: object) -> str:
    assert main([str(a) for a in args]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("roost: error: ") and "\n" not in error
    return error


def test_roost_alone_shows_help_and_v_shows_the_version(capsys):
    assert main([]) == 0
    assert "simulate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["-V"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("roost ")


def test_an_unknown_flag_gets_the_nearest_one(capsys):
    assert "did you mean --rounds?" in error_of(capsys, "simulate", "--num-rounds", "3")
    assert "did you mean --lr?" in error_of(capsys, "simulate", "--lrr", "0.1")


def test_a_project_command_points_to_the_run_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "proj", "numpy")
    error = error_of(capsys, "run", "proj", "--rounds", "3")
    assert "--run-config num-rounds=3" in error
    assert "did you mean --engine?" in error_of(capsys, "run", "proj", "--egine", "process")


def test_a_fraction_fit_of_zero_is_refused_in_the_flags_terms(capsys):
    error = error_of(capsys, "simulate", "--fraction-fit", "0")
    assert "--fraction-fit" in error and "fraction_fit" not in error


def test_the_servers_wait_timeout_names_min_clients(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["server", "--address", f"127.0.0.1:{port}", "--rounds", "1", "--wait-timeout", "0.3"]
    assert "--min-clients" in refusal_of(capsys, *args, "--quiet")


@pytest.fixture
def module_app(tmp_path, monkeypatch):
    (tmp_path / "my_app.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import roost

            class Client(roost.Client):
                def get_parameters(self, config):
                    return [np.zeros(2)]

                def fit(self, parameters, config):
                    return [parameters[0] + 1], 1, {"train_loss": 0.5}

                def evaluate(self, parameters, config):
                    return 1.0, 1, {}

            def client_fn(context):
                return Client()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_app:client_fn"


def test_an_app_names_its_engine_and_refuses_the_demos_options(module_app, capsys):
    assert main(["simulate", "--app", module_app, "--rounds", "1", "--clients", "2"]) == 0
    shown = capsys.readouterr().out
    assert "engine: sequential (the default)" in shown
    error = refusal_of(capsys, "simulate", "--app", module_app, "--lr", "0.1", "--batch-size", "4")
    assert "--batch-size, --lr set the default app's training" in error
    error = refusal_of(capsys, "simulate", "--app", module_app, "--engine", "vectorized")
    assert "--engine sequential" in error


def test_the_summary_table_shows_training_metrics():
    history = History()
    history.metrics_distributed_fit = {"train_loss": [(1, 0.25)], "train_accuracy": [(1, 0.5)]}
    columns = [column.header for column in history_table(history).columns]
    assert "train loss" in columns and "train acc" in columns
