"""A real coordinator process, two nodes running `roost client` subprocesses, and two people.

The nodes here are stand-ins that speak the node protocol (`coordinator_support.NodeStandIn`);
one coordinator serves every test of the module.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from coordinator_support import NodeStandIn, ProtocolNode

from roost.cli import main
from roost.federation.keys import generate_key_pair, public_key_line
from roost.server.state import last_recorded_round

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]

ROUNDS = "num-rounds=6"


def roost(*args: str, check: bool = True) -> SimpleNamespace:
    """Run a `roost` command in this process (the people's commands are HTTP clients)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        returncode = main(list(args))
    result = SimpleNamespace(returncode=returncode, stdout=out.getvalue(), stderr=err.getvalue())
    if check:
        assert returncode == 0, result.stdout + result.stderr
    return result


class Federation:
    def __init__(self, root: Path) -> None:
        self.root, self.data = root, root / "fed"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roost.cli", "coordinator", "--data", str(self.data),
             "--address", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline()
        assert "serving on" in line, line + self.process.stdout.read()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def token(self, name: str) -> str:
        out = roost("coordinator", "--data", str(self.data), "--add-person", name).stdout
        return out.rsplit(": ", 1)[1].strip()

    def as_person(self, token: str) -> list[str]:
        return ["--coordinator", self.url, "--token", token]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("federation")
    fed = Federation(root)
    fed.ada, fed.bob = fed.token("ada"), fed.token("bob")
    publisher = generate_key_pair(root / "publisher.pem")
    fed.publisher_key = root / "publisher.pem"
    roost("new", str(root / "app"))
    fed.project = root / "app"
    stand_ins = []
    for index in range(2):
        key = generate_key_pair(root / f"n{index}.pem")
        roost(
            "coordinator",
            "--data",
            str(fed.data),
            "--add-node",
            f"n{index}",
            str(root / f"n{index}.pub"),
        )
        stand_ins.append((f"n{index}", key))
    fed.start()
    nodes = [
        NodeStandIn(ProtocolNode(fed.url, name, key), i, 2, public_key_line(publisher), root / name)
        for i, (name, key) in enumerate(stand_ins)
    ]
    fed.nodes = nodes
    try:
        for node in nodes:
            node.__enter__()
        yield fed
    finally:
        for node in nodes:
            node.__exit__(None, None, None)
        if fed.process is not None and fed.process.poll() is None:
            fed.process.terminate()
            fed.process.wait(timeout=30)


def _submit(fed: Federation, *extra: str) -> str:
    out = roost(
        "run", str(fed.project), *fed.as_person(fed.ada), "--run-config", ROUNDS, *extra
    ).stdout
    return out.split("submitted run ", 1)[1].split()[0]


def test_coordinator_runs_a_signed_run_that_its_owner_follows_and_pulls(federation, tmp_path):
    fed = federation
    run = _submit(fed, "--sign-key", str(fed.publisher_key))
    follow = roost("log", run, "--follow", *fed.as_person(fed.ada))
    assert f"run {run}: completed" in follow.stdout and "round 6/6" in follow.stdout
    pulled = roost("pull", run, "--out", str(tmp_path / "out"), *fed.as_person(fed.ada)).stdout
    assert "model.npz" in pulled and (tmp_path / "out" / "history.json").is_file()
    fed.first_model = tmp_path / "out" / "model.npz"
    assert run not in roost("ls", *fed.as_person(fed.bob)).stdout
    refused = roost("stop", run, *fed.as_person(fed.bob), check=False)
    assert refused.returncode == 2 and f"no run {run} of yours" in refused.stderr
    nodes = roost("nodes", *fed.as_person(fed.bob)).stdout
    assert [line.split()[:2] for line in nodes.splitlines()[1:]] == [["n0", "yes"], ["n1", "yes"]]


def test_coordinator_killed_mid_run_resumes_it_to_the_same_model(federation, tmp_path):
    fed = federation
    run = _submit(fed, "--sign-key", str(fed.publisher_key))
    state = fed.data / "runs" / run / "state"
    deadline = time.monotonic() + 60
    while (last_recorded_round(state) or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    fed.kill()
    assert (last_recorded_round(state) or 0) < 6, "the run ended before the kill"
    fed.start()
    follow = roost("log", run, "--follow", *fed.as_person(fed.ada))
    assert f"run {run}: completed" in follow.stdout and "resuming" in follow.stdout
    roost("pull", run, "--out", str(tmp_path / "out"), *fed.as_person(fed.ada))
    with np.load(fed.first_model) as first, np.load(tmp_path / "out" / "model.npz") as resumed:
        for name in first.files:
            np.testing.assert_allclose(resumed[name], first[name], rtol=1e-6, atol=1e-7)


def test_coordinator_shows_the_submitter_why_a_node_refused_an_unsigned_bundle(federation):
    fed = federation
    run = _submit(fed)
    follow = roost("log", run, "--follow", *fed.as_person(fed.ada), check=False)
    assert follow.returncode == 1 and f"run {run}: failed" in follow.stdout
    listed = [line for line in roost("ls", *fed.as_person(fed.ada)).stdout.splitlines()
              if line.split()[0] == run]  # fmt: skip
    assert "failed" in listed[0] and "refused the run: bundle is unsigned" in listed[0]
    assert os.path.isdir(fed.data / "runs" / run)


def test_coordinator_stop_ends_a_running_run_and_its_nodes_clients(federation):
    fed = federation
    run = roost(
        "run", str(fed.project), *fed.as_person(fed.ada), "--sign-key", str(fed.publisher_key),
        "--run-config", "num-rounds=100000",
    ).stdout.split("submitted run ", 1)[1].split()[0]  # fmt: skip
    log = fed.data / "runs" / run / "log.txt"
    deadline = time.monotonic() + 60
    while (
        "round 1/" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert roost("stop", run, *fed.as_person(fed.ada)).stdout.strip() == f"run {run}: stopping"
    follow = roost("log", run, "--follow", *fed.as_person(fed.ada), check=False)
    assert follow.returncode == 1 and f"run {run}: stopped" in follow.stdout
    while any(run in node.clients for node in fed.nodes) and time.monotonic() < deadline:
        time.sleep(0.05)  # the nodes hear `stop` at their next poll
    assert not any(run in node.clients for node in fed.nodes)
