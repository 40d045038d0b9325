"""The federation end to end: a `roost coordinator` process, three `roost node` processes and two
people (ada and bob) plus an operator, on SQLite and on PostgreSQL.

One federation per database serves every test of the module, in order. Runs are 2 rounds of the
`roost new --framework numpy` project over the nodes' three partitions; its client is wrapped so
that the run config can slow a round down (`fit-delay`, a sleep: the model does not change) or
crash the app (`crash`).

The reference model is the simulation of the same project and seed (`roost run DIR`): a
federated run computes the same thing by construction (the same three partitions, the same seeded
clients and the same FedAvg over every client each round), so it must agree to 1e-12 (only the
order of the aggregation's sums may differ).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from coordinator_support import POSTGRES_URL, ProtocolNode, post
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from federation_support import NODES, Federation, paced_project, roost
from grpc_support import free_port

from roost.federation.keys import generate_key_pair
from roost.server.state import last_recorded_round

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]

FLOWER_NUMPY_APP = Path(__file__).resolve().parent / "flower_apps" / "numpy_app"


def _postgres_database() -> str:
    server = os.environ.get(POSTGRES_URL)
    if not server:
        pytest.skip(f"{POSTGRES_URL} is not set (.ci/with-postgres CMD sets it, as CI does)")
    import secrets

    from sqlalchemy import create_engine, text

    name = f"roost_e2e_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


REFERENCE: list[Path] = []
"""The simulated model every completed run of the module must end with."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fed(request, tmp_path_factory):
    db = _postgres_database() if request.param == "postgresql" else None
    root = tmp_path_factory.mktemp(f"federation-{request.param}")
    fed = Federation(root, db)
    try:
        fed.ada, fed.bob, fed.op = fed.token("ada"), fed.token("bob"), fed.token("op", "--operator")
        generate_key_pair(root / "publisher.pem")
        generate_key_pair(root / "stranger.pem")
        fed.publisher, fed.stranger = root / "publisher.pem", root / "stranger.pem"
        fed.project = paced_project(root)
        fed.start()
        for index in range(NODES):
            fed.add_node(index, root / "publisher.pub")
        if not REFERENCE:  # the same project on either database: simulate it once
            roost("run", str(fed.project), "--out", str(root / "reference"), "--quiet")
            REFERENCE.append(root / "reference" / "model.npz")
        fed.reference = REFERENCE[0]
        yield fed
    finally:
        fed.close()


def _follow(fed: Federation, token: str, run: str, timeout: float = 60) -> str:
    """`roost log RUN --follow`, once the run has finished (a hung run fails the test)."""
    deadline = time.monotonic() + timeout
    while _row(fed, token, run).split()[1:2] not in (["completed"], ["failed"], ["stopped"]):
        assert time.monotonic() < deadline, f"run {run} did not finish: {_row(fed, token, run)}"
        time.sleep(0.1)
    result = roost("log", run, "--follow", *fed.as_person(token), check=False)
    return result.stdout + result.stderr


def _row(fed: Federation, token: str, run: str) -> str:
    rows = roost("ls", *fed.as_person(token)).stdout.splitlines()[1:]
    return next((row for row in rows if row.split()[0] == run), "")


def _assert_reference_model(fed: Federation, token: str, run: str, out: Path) -> None:
    pulled = roost("pull", run, "--out", str(out), *fed.as_person(token)).stdout
    assert "model.npz" in pulled and (out / "history.json").is_file()
    with np.load(fed.reference) as reference, np.load(out / "model.npz") as model:
        assert sorted(model.files) == sorted(reference.files)
        for name in reference.files:
            np.testing.assert_allclose(model[name], reference[name], rtol=0, atol=1e-12)


def test_federation_serves_two_peoples_runs_at_once_to_the_reference_model(fed, tmp_path):
    assert [row[1] for row in fed.wait_online()] == ["yes"] * NODES
    runs = {fed.ada: fed.submit(fed.ada), fed.bob: fed.submit(fed.bob)}
    for token, run in runs.items():
        assert _row(fed, token, run).split()[1] in ("queued", "starting", "running", "completed")
    for token, run in runs.items():
        followed = roost("log", run, "--follow", *fed.as_person(token)).stdout  # streams
        assert "round 2/2" in followed and f"run {run}: completed" in followed, followed
        assert _row(fed, token, run).split()[1] == "completed"
        _assert_reference_model(fed, token, run, tmp_path / run)
    for run in runs.values():  # the coordinator's dashboard reads the run's own files
        with urllib.request.urlopen(f"{fed.dashboard}/runs/{run}", timeout=10) as page:
            html = page.read().decode()
        assert 'id="round-counter">2<' in html and 'id="round-total">2<' in html
        assert 'id="run-state">finished<' in html
    nodes = roost("nodes", *fed.as_person(fed.bob)).stdout.splitlines()
    assert nodes[0].split()[:2] == ["NODE", "ONLINE"]
    for row in nodes[1:]:
        _name, online, *_, served, failures = row.split()
        assert online == "yes" and int(served) >= 2 and failures == "0", nodes


def _wait_rounds(fed: Federation, runs: list[str], rounds: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    states = [fed.data / "runs" / run / "state" for run in runs]
    while min(last_recorded_round(state) or 0 for state in states) < rounds:
        assert time.monotonic() < deadline, f"runs {runs} did not reach round {rounds}"
        time.sleep(0.02)


def test_coordinator_killed_mid_run_resumes_both_runs_to_the_reference_model(fed, tmp_path):
    # A round takes 2.5 s or more: room to kill both runs mid-run even when one started a
    # couple of seconds after the other (a loaded machine; at 1 s the first could finish).
    slow = ["--run-config", "fit-delay=2.5"]
    runs = {fed.ada: fed.submit(fed.ada, *slow), fed.bob: fed.submit(fed.bob, *slow)}
    _wait_rounds(fed, list(runs.values()), 1)
    logs = [home / "node.log" for home in fed.node_dirs]
    before = [len(log.read_text()) for log in logs]
    fed.kill()
    try:
        for run in runs.values():
            assert (last_recorded_round(fed.data / "runs" / run / "state") or 0) < 2
        down = roost("ls", *fed.as_person(fed.ada), check=False)
        assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1, down.stderr
        assert fed.url in down.stderr and "is down" in down.stderr, down.stderr
        deadline = time.monotonic() + 10
        while not all(  # the nodes try again meanwhile, and say so
            "unreachable" in log.read_text()[length:]
            for log, length in zip(logs, before, strict=True)
        ):
            assert time.monotonic() < deadline, "a node did not notice the coordinator was down"
            time.sleep(0.05)
    finally:
        fed.start()
    for token, run in runs.items():
        followed = _follow(fed, token, run)
        assert f"run {run}: completed" in followed and "resuming" in followed, followed
        _assert_reference_model(fed, token, run, tmp_path / run)
    assert [row[1] for row in fed.wait_online()] == ["yes"] * NODES  # re-attached by themselves


def test_federation_node_refuses_an_untrusted_bundle_and_its_submitter_sees_why(fed):
    untrusted, unsigned = fed.submit(fed.ada, sign=fed.stranger), fed.submit(fed.ada, sign=Path())
    for run, why in ((untrusted, "this node does not trust"), (unsigned, "bundle is unsigned")):
        followed = _follow(fed, fed.ada, run)
        assert f"run {run}: failed" in followed and why in followed, followed
        row = _row(fed, fed.ada, run)
        assert row.split()[1] == "failed" and "refused the run" in row and why in row, row


def test_federation_app_that_crashes_leaves_the_nodes_serving_the_other_run(fed, tmp_path):
    crashing = fed.submit(fed.ada, "--run-config", "crash=1")
    healthy = fed.submit(fed.bob)
    followed = _follow(fed, fed.ada, crashing)
    assert f"run {crashing}: failed" in followed, followed
    followed = _follow(fed, fed.bob, healthy)
    assert f"run {healthy}: completed" in followed, followed
    _assert_reference_model(fed, fed.bob, healthy, tmp_path / healthy)
    assert all(node.poll() is None for node in fed.nodes)


def test_federation_runs_a_flower_message_api_project(fed, tmp_path):
    """A Flower project submits as a roost one does: its ServerApp serves the run, and each node
    runs its ClientApp on the node's own partition."""
    submitted = roost(
        "run", str(FLOWER_NUMPY_APP), *fed.as_person(fed.ada), "--nodes", str(NODES),
        "--sign-key", str(fed.publisher), "--run-config", "num-server-rounds=2",
    ).stdout  # fmt: skip
    run = submitted.split("submitted run ", 1)[1].split()[0]
    followed = _follow(fed, fed.ada, run)
    assert f"run {run}: completed" in followed, followed
    roost("pull", run, "--out", str(tmp_path / run), *fed.as_person(fed.ada))
    history = json.loads((tmp_path / run / "history.json").read_text())
    # Its ServerApp samples the nodes connected when a round starts (all, or all but a late one).
    assert len(history["rounds"]) == 2
    assert all(2 <= r["fit_results"] <= NODES for r in history["rounds"]), history["rounds"]


def test_federation_people_see_and_stop_only_their_own_runs_and_operators_all(fed):
    run = fed.submit(fed.bob, "--run-config", "num-rounds=100000")
    _wait_rounds(fed, [run], 1)
    assert _row(fed, fed.bob, run) and not _row(fed, fed.ada, run)
    assert _row(fed, fed.op, run).split()[1] == "running"
    for command in (["stop", run], ["log", run], ["pull", run, "--out", str(fed.root / "x")]):
        refused = roost(*command, *fed.as_person(fed.ada), check=False)
        assert refused.returncode == 2 and f"no run {run} of yours" in refused.stderr
    assert roost("stop", run, *fed.as_person(fed.op)).stdout.strip() == f"run {run}: stopping"
    followed = _follow(fed, fed.bob, run)
    assert f"run {run}: stopped" in followed, followed
    deadline = time.monotonic() + 30
    while fed.clients_of(run) and time.monotonic() < deadline:
        time.sleep(0.1)  # the nodes hear `stop` at their next poll
    assert not fed.clients_of(run)


def test_federation_refuses_a_corrupt_or_oversized_bundle_and_loses_nothing(fed, tmp_path):
    before = roost("ls", *fed.as_person(fed.ada)).stdout
    corrupt = base64.urlsafe_b64encode(os.urandom(1000)).decode().rstrip("=")
    status, answer = post(
        f"{fed.url}/v1/runs",
        {"bundle": corrupt, "signature": None, "publisher_key": None, "run_config": []},
        f"Bearer {fed.ada}",
    )
    assert status == 400 and "bundle refused" in answer["error"] and "\n" not in answer["error"]
    big = tmp_path / "big"
    big.mkdir()
    (big / "pyproject.toml").write_text((fed.project / "pyproject.toml").read_text())
    with (big / "weights.bin").open("wb") as file:
        file.truncate(51 << 20)  # sparse: over the 50 MiB cap without writing it
    refused = roost("run", str(big), *fed.as_person(fed.ada), check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "50 MiB cap" in refused.stderr
    assert roost("ls", *fed.as_person(fed.ada)).stdout == before


def test_federation_refuses_a_node_with_the_wrong_key_in_one_line(fed):
    impostor = ProtocolNode(fed.url, "node0", Ed25519PrivateKey.generate())
    status, answer = post(f"{fed.url}/v1/nodes/challenge", {"node": "node0"})
    assert status == 200
    from roost.federation.keys import b64decode, b64encode

    challenge = b64decode(answer["challenge"])
    status, answer = post(
        f"{fed.url}/v1/nodes/session",
        {"node": "node0", "challenge": b64encode(challenge),
         "signature": b64encode(impostor.key.sign(challenge))},
    )  # fmt: skip
    assert status == 401 and "\n" not in answer["error"], answer
    assert [row[1] for row in fed.wait_online()] == ["yes"] * NODES  # the real node0 is unharmed


def test_federation_cli_says_in_one_line_that_a_run_does_not_exist(fed):
    for command in (["log", "999"], ["stop", "999"], ["pull", "999"], ["log", "x1"]):
        result = roost(*command, *fed.as_person(fed.op), check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
        assert "999" in result.stderr or "x1" in result.stderr


def test_federation_cli_says_in_one_line_that_the_coordinator_is_down(fed):
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["ls"], ["nodes"], ["run", str(fed.project)]):
        result = roost(*command, "--coordinator", url, "--token", fed.ada, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
        assert "is down" in result.stderr and url in result.stderr, result.stderr


def test_coordinator_suite_runs_on_postgresql_in_ci():
    if os.environ.get("CI"):
        assert os.environ.get(POSTGRES_URL), f"CI must set {POSTGRES_URL} (.ci/run does)"
