"""`--secagg` on `roost simulate` and `roost server` (clients need no flag)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from grpc_support import free_port, processes, start_clients, start_demo_server, wait_all

from roost.cli import main


def run_cli(*args: str) -> int:
    return main(list(args))


def load_model(path):
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def test_simulate_secagg_gives_the_plaintext_model_within_the_quantization_bound(tmp_path):
    common = ["simulate", "--rounds", "2", "--clients", "6", "--engine", "sequential"]
    common += ["--quiet", "--no-plot"]
    assert run_cli(*common, "--out", str(tmp_path / "plain")) == 0
    assert run_cli(*common, "--secagg", "--secagg-bits", "48", "--out", str(tmp_path / "sec")) == 0
    for secure, plain in zip(
        load_model(tmp_path / "sec" / "model.npz"),
        load_model(tmp_path / "plain" / "model.npz"),
        strict=True,
    ):
        np.testing.assert_allclose(secure, plain, atol=1e-6)
    history = json.loads((tmp_path / "sec" / "history.json").read_text())
    assert history["rounds"][0]["phases"]["secagg_unmask"] == [6, 0]


def test_secagg_composes_with_central_dp_on_the_command_line(tmp_path, capsys):
    code = run_cli(
        "simulate",
        "--rounds",
        "1",
        "--clients",
        "6",
        "--quiet",
        "--secagg",
        "--dp",
        "central",
        "--sampling",
        "fixed",
        "--noise-multiplier",
        "0.5",
        "--clip-norm",
        "2",
        "--no-plot",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    shown = capsys.readouterr().out
    assert "secure aggregation: SecAgg (complete graph) over 6 clients" in shown
    assert "coordinates clipped to ±2" in shown  # --secagg-clip follows a larger --clip-norm
    # What the setting guarantees (issue 22, hole 7): t = 4 of 6 holders, k = 5.
    assert "no colluding clients assumed); a client's input stays hidden unless 2 of its 5" in shown
    assert "at most 2 of any client's 6 share holders drop" in shown
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["rounds"] == [{"server_round": 1, "withheld": True}]  # counts: central DP
    assert history["privacy"]["epsilon"][0][1] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--secagg-bits", "40"], "--secagg-bits needs --secagg"),
        (["--secagg", "--strategy", "fedmedian"], "needs each update"),
        (["--secagg", "--secagg-bits", "4"], "bits must be an int in"),
        (["--secagg", "--clip-norm", "1", "--clip-quantile", "0.5"], "secure aggregation hides"),
    ],
)
def test_bad_secagg_settings_get_one_clear_line(flags, message, capsys):
    code = run_cli("simulate", "--rounds", "1", "--clients", "4", "--quiet", *flags)
    assert code != 0
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_server_secagg_with_plain_clients_over_grpc(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with processes(tmp_path) as run:
        server = start_demo_server(run, address, 3, "--rounds", "2", "--secagg")
        wait_all(run, server, start_clients(run, address, 3))
        assert "secure aggregation: SecAgg (complete graph) over 3 clients" in run.log(server)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["phases"]["secagg_unmask"] for r in history["rounds"]] == [[3, 0], [3, 0]]
    assert [r["fit_results"] for r in history["rounds"]] == [3, 3]
