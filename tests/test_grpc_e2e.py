"""`roost server` and `roost client` as real processes on 127.0.0.1: crashes, restarts, TLS."""

from __future__ import annotations

import json
import signal
import sqlite3

import numpy as np
import pytest
from grpc_support import (
    free_port,
    make_certificates,
    processes,
    simulate,
    start_client_process,
    start_clients,
    start_demo_server,
    wait_all,
    wait_for,
    wait_listening,
)

from roost.apps.digits import make_client_fn
from roost.apps.digits import make_strategy as make_demo_strategy
from roost.server.loop import ServerConfig
from roost.settings import RunSettings
from roost.simulation import run_simulation

APP = "grpc_support:app"


def load_model(path):
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def round_counts(out_dir):
    history = json.loads((out_dir / "history.json").read_text())
    return [
        (
            r["server_round"],
            r["fit_results"],
            r["fit_failures"],
            r["evaluate_results"],
            r["evaluate_failures"],
        )
        for r in history["rounds"]
    ], history


@pytest.mark.slow
def test_server_and_two_clients_run_the_demo_for_three_rounds(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with processes(tmp_path) as run:
        server = start_demo_server(run, address, 2, "--rounds", "3")
        wait_all(run, server, start_clients(run, address, 2))
        server_log = run.log(server)
    counts, _ = round_counts(tmp_path / "out")
    assert counts == [(r, 2, 0, 2, 0) for r in (1, 2, 3)]
    assert not (tmp_path / "out" / "plot.png").exists()  # --no-plot
    assert "2 connected: 0, 1" in server_log
    # The deployed run is the simulated run: same seed, same clients, same model.
    settings = RunSettings(num_clients=2, num_rounds=3)
    reference = run_simulation(
        make_client_fn(0),
        2,
        strategy=make_demo_strategy(settings),
        config=ServerConfig(num_rounds=3),
        seed=0,
    )
    for got, expected in zip(
        load_model(tmp_path / "out" / "model.npz"), reference.parameters, strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def start_app_server(run, address: str, rounds: int, *options: str):
    """`roost server` with the test app for `rounds` rounds, writing out/ (without the chart)."""
    app = ["--app", APP, "--address", address, "--rounds", str(rounds)]
    return run.start("server", "server", *app, "--no-plot", "--out", "out", *options)


@pytest.mark.slow
def test_a_client_killed_during_fit_fails_that_round_and_rejoins(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"ROOST_TEST_MARKERS": str(markers), "ROOST_TEST_FIT_SLEEP": "0.5"}
    with processes(tmp_path, env) as run:
        server = start_app_server(run, address, 4)

        def client(partition, name):
            return start_client_process(run, name, address, (partition, 2), "--app", APP)

        first = client(0, "client0")
        doomed = client(1, "client1")
        wait_for(
            lambda: (markers / "fit-1-2").exists(), 60, what="client 1 to start fit in round 2"
        )
        doomed.send_signal(signal.SIGKILL)
        assert doomed.wait(10) == -signal.SIGKILL
        reborn = client(1, "client1-restarted")
        wait_all(run, server, [first, reborn])
        reborn_log = run.log(reborn)
    counts, history = round_counts(tmp_path / "out")
    assert counts == [(1, 2, 0, 2, 0), (2, 1, 1, 2, 0), (3, 2, 0, 2, 0), (4, 2, 0, 2, 0)]
    assert history["rounds"][1]["failed_clients"] == ["1"]
    assert (markers / "fit-1-3").exists() and (markers / "fit-1-4").exists()
    assert "FitIns" in reborn_log and "the server ended the run" in reborn_log


def completed_rounds(state_dir) -> int:
    try:
        with sqlite3.connect(f"file:{state_dir / 'state.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT MAX(server_round) FROM rounds").fetchone()[0] or 0
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_server_killed_after_round_2_resumes_to_the_same_model(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    state = tmp_path / "state"
    server_args = [
        "server",
        "--app",
        APP,
        "--address",
        address,
        "--rounds",
        "4",
        "--state",
        str(state),
        "--no-plot",
        "--out",
        "out",
    ]
    with processes(tmp_path, {"ROOST_TEST_FIT_SLEEP": "0.5"}) as run:
        server = run.start("server", *server_args)
        clients = [
            start_client_process(run, f"client{p}", address, (p, 2), "--app", APP) for p in (0, 1)
        ]
        wait_for(lambda: completed_rounds(state) >= 2, 60, what="round 2 to be recorded")
        server.send_signal(signal.SIGKILL)
        assert server.wait(10) == -signal.SIGKILL
        assert completed_rounds(state) == 2
        assert not (tmp_path / "out" / "history.json").exists()  # checked at start, not written

        # Starting over by mistake is refused; --resume continues.
        again = run.start("server-again", *server_args)
        assert run.wait(again, 30) == 2
        assert "--resume" in run.log(again)
        resumed = run.start("server-resumed", *server_args, "--resume")
        assert run.wait(resumed, 120) == 0, run.log(resumed)
        for client in clients:
            assert run.wait(client, 30) == 0, run.log(client)
        resumed_log = run.log(resumed)
    assert "resuming after round 2 of 4" in resumed_log
    counts, _ = round_counts(tmp_path / "out")
    assert counts == [(r, 2, 0, 2, 0) for r in (1, 2, 3, 4)]
    reference = simulate(4)  # the same run, uninterrupted
    [model] = load_model(tmp_path / "out" / "model.npz")
    np.testing.assert_allclose(model, reference.parameters[0], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_tls_with_tokens_refuses_wrong_credentials_and_completes(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    certs = make_certificates(tmp_path)
    tokens = {"0": "tok-zero-4f9a8b7c6d5e4f3a", "1": "tok-one-1a2b3c4d5e6f7a8b"}
    (tmp_path / "tokens.txt").write_text(
        "# node-id token\n" + "".join(f"{n} {t}\n" for n, t in tokens.items())
    )
    with processes(tmp_path) as run:
        server = start_app_server(
            run,
            address,
            2,
            "--certificates",
            str(certs["server"]),
            str(certs["server-key"]),
            "--auth-tokens",
            "tokens.txt",
        )
        # The refused clients must fail on their credentials, not because the server was still
        # starting (the no-TLS one gives up after 2 s without a connection).
        wait_listening(address)

        def client(name, partition, *options, env=None):
            return start_client_process(
                run, name, address, (partition, 2), "--app", APP, *options, env=env
            )

        wrong_token = client(
            "wrong-token",
            1,
            "--root-certificate",
            str(certs["ca"]),
            "--token",
            "tok-guessed-0000000000000",
        )
        no_tls = client("no-tls", 1, "--token", tokens["1"], "--reconnect-timeout", "2")
        # Refused before the honest clients start: on a loaded machine they could finish the run
        # before this one's interpreter is up, and it would find no server at all.
        assert run.wait(wrong_token, 90) != 0
        assert "refused this client's credentials" in run.log(wrong_token)
        honest = [
            client("client0", 0, "--root-certificate", str(certs["ca"]), "--token", tokens["0"]),
            # The token may also come from the environment, out of sight of `ps`.
            client(
                "client1",
                1,
                "--root-certificate",
                str(certs["ca"]),
                env={"ROOST_TOKEN": tokens["1"]},
            ),
        ]
        assert run.wait(no_tls, 90) != 0
        assert "no connection to the server" in run.log(no_tls)
        wait_all(run, server, honest)
        server_log = run.log(server)
    assert "TLS, token authentication" in server_log
    assert "missing or unknown token" in server_log
    counts, _ = round_counts(tmp_path / "out")
    assert counts == [(1, 2, 0, 2, 0), (2, 2, 0, 2, 0)]
    [model] = load_model(tmp_path / "out" / "model.npz")
    np.testing.assert_allclose(model, simulate(2).parameters[0], rtol=0, atol=1e-9)


@pytest.mark.slow
def test_server_runs_a_named_strategy_like_the_simulation(tmp_path):
    """`roost server --strategy fedadam` deploys the preset the simulation runs, optimizer state
    and all: the model equals `roost simulate --strategy fedadam` with the same seed."""
    from roost.cli import main

    address = f"127.0.0.1:{free_port()}"
    options = ["--rounds", "2", "--strategy", "fedadam", "--server-lr", "0.05"]
    with processes(tmp_path) as run:
        server = start_demo_server(run, address, 2, *options)
        wait_listening(address)
        wait_all(run, server, start_clients(run, address, 2))

    def simulated(name: str, *flags: str) -> list[np.ndarray]:
        out = str(tmp_path / name)
        command = ["simulate", "--quiet", "--clients", "2", "--engine", "sequential", *flags]
        assert main([*command, "--no-plot", "--out", out]) == 0
        return load_model(tmp_path / name / "model.npz")

    deployed = load_model(tmp_path / "out" / "model.npz")
    for got, expected in zip(deployed, simulated("simulated", *options), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # FedAdam moved the model differently from FedAvg's plain replacement.
    assert not np.allclose(deployed[0], simulated("fedavg", "--rounds", "2")[0])


def test_server_refuses_strategy_flags_with_an_app(capsys):
    from roost.cli import main

    assert (
        main(
            [
                "server",
                "--app",
                APP,
                "--strategy",
                "fedadam",
                "--address",
                f"127.0.0.1:{free_port()}",
            ]
        )
        == 2
    )
    assert "your roost.App's strategy" in capsys.readouterr().err
