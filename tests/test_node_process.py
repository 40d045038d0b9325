"""`roost node` as a real process against a minimal coordinator (a test fixture), running a real
`roost server`'s run to completion, refusing an untrusted bundle and outliving an app that
crashes (slow: four processes)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
from pathlib import Path

import pytest
from fake_coordinator import FakeCoordinator
from grpc_support import free_port, processes, wait_for, wait_listening

from roost.federation.bundle import make_bundle, sign_bundle, unpack_bundle
from roost.federation.keys import b64encode, generate_key_pair, load_private_key, public_key_line
from roost.federation.node_link import CoordinatorLink, CoordinatorRefusedError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]

PYPROJECT = """\
[project]
name = "tinyfed"
dependencies = ["numpy>=1.20"]

[tool.roost.components]
client = "tinyfed.client:client_fn"
strategy = "tinyfed.server:make_strategy"

[tool.roost.config]
num-rounds = 2
"""

CLIENT = """\
import os
from pathlib import Path

import numpy as np

import roost


class Linear(roost.Client):
    def __init__(self, partition_id):
        rng = np.random.default_rng(partition_id)
        self.x = rng.normal(size=(20, 3))
        self.y = self.x @ np.array([1.0, 2.0, 3.0])

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        w = parameters[0]
        return [w - 0.1 * self.x.T @ (self.x @ w - self.y) / len(self.y)], len(self.y), {}

    def evaluate(self, parameters, config):
        return float(np.mean((self.x @ parameters[0] - self.y) ** 2)), len(self.y), {}


def client_fn(context):
    # The node's data path reaches the app in its environment; its cwd is the run's directory.
    Path("seen.json").write_text(os.environ["ROOST_DATA_TRAIN"])
    return Linear(context.partition_id)
"""

SERVER = """\
import numpy as np

import roost


def make_strategy(run_config):
    return roost.FedAvg(
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        initial_parameters=[np.zeros(3)],
    )
"""


def write_project(directory: Path, crash: bool = False) -> Path:
    (directory / "tinyfed").mkdir(parents=True)
    (directory / "pyproject.toml").write_text(PYPROJECT)
    client = 'raise RuntimeError("the app is broken")\n' if crash else CLIENT
    (directory / "tinyfed" / "client.py").write_text(client)
    (directory / "tinyfed" / "server.py").write_text(SERVER)
    return directory


def assignment(run: int, bundle: bytes, key, server: str, token: str) -> dict:
    sha256 = hashlib.sha256(bundle).hexdigest()
    return {
        "run": run,
        "server": server,
        "token": token,
        "root_certificate": None,
        "bundle_sha256": sha256,
        "bundle_url": f"/v1/nodes/bundles/{sha256}",
        "signature": b64encode(sign_bundle(bundle, key)),
        "publisher_key": public_key_line(key),
        "run_config": {},
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    """A fake coordinator and a `roost node` process serving it (stopped whatever happens)."""
    root = tmp_path_factory.mktemp("node")
    node_key = generate_key_pair(root / "node.pem")
    generate_key_pair(root / "alice.pem")
    config = (
        'name = "clinic"\nprivate_key = "node.pem"\ntrusted_publishers = ["alice.pub"]\n'
        "partition_id = 0\nnum_partitions = 1\nmax_concurrent_runs = 2\npoll_interval = 0.2\n"
        '[data]\ntrain = "/srv/clinic/train.csv"\n'
    )
    with FakeCoordinator("clinic", node_key.public_key()) as coordinator, processes(root) as group:
        (root / "node.toml").write_text(f'coordinator = "{coordinator.url}"\n{config}')
        process = group.start("node", "node", "--config", str(root / "node.toml"))
        yield root, coordinator, group, process


def test_the_node_runs_a_run_refuses_an_untrusted_one_and_survives_a_crash(node) -> None:
    root, coordinator, group, process = node
    bundle = make_bundle(write_project(root / "project"))
    broken = make_bundle(write_project(root / "broken", crash=True))
    unpack_bundle(bundle, root / "server-app")  # what the coordinator would serve the run from
    address, token = f"127.0.0.1:{free_port()}", secrets.token_urlsafe(16)
    (root / "tokens").write_text(f"clinic {token}\n")
    server = group.start(
        "server", "server", "--app", str(root / "server-app"), "--address", address,
        "--auth-tokens", str(root / "tokens"), "--out", str(root / "out"), "--no-plot",
        "--min-clients", "1",
    )  # fmt: skip
    mallory = generate_key_pair(root / "mallory.pem")
    alice = load_private_key(root / "alice.pem")  # the publisher node.toml trusts
    wait_listening(address)
    coordinator.assign(assignment(1, bundle, alice, address, token), bundle)
    coordinator.assign(assignment(2, broken, alice, "127.0.0.1:1", "t"), broken)
    coordinator.assign(assignment(3, bundle, mallory, address, "t"), bundle)

    wait_for(lambda: coordinator.report_of(1, "exited"), 60, 0.1, "run 1 to finish")
    assert group.wait(server, 30) == 0, group.log(server)
    history = json.loads((root / "out" / "history.json").read_text())
    assert len(history["losses_distributed"]) == 2
    assert (root / "runs" / "1" / "seen.json").read_text() == "/srv/clinic/train.csv"
    assert coordinator.report_of(1, "started")
    assert any(1 in poll["running"] for poll in coordinator.polls)

    crashed = wait_for(lambda: coordinator.report_of(2, "failed"), 30, 0.1, "run 2 to fail")
    assert "the app is broken" in crashed
    # The node takes new runs only while it has room: run 3 may reach it, and be refused, only
    # once a slot frees up.
    refused = wait_for(lambda: coordinator.report_of(3, "refused"), 30, 0.1, "run 3's refusal")
    assert "does not trust" in refused
    assert not (root / "runs" / "3").exists()

    # Two runs whose server is not there: their clients wait; one is stopped by the
    # coordinator, the other with the node.
    nowhere = f"127.0.0.1:{free_port()}"
    for run in (4, 5):
        coordinator.assign(assignment(run, bundle, alice, nowhere, "t"), bundle)
    started = [wait_for(lambda r=r: coordinator.report_of(r, "started"), 30, 0.1) for r in (4, 5)]
    pids = [int(text.rsplit(" ", 1)[-1]) for text in started]
    coordinator.stop = [4]
    stopped = wait_for(lambda: coordinator.report_of(4, "exited"), 30, 0.1, "run 4 to stop")
    assert stopped == "stopped by the coordinator" and not alive(pids[0])

    assert process.poll() is None, group.log(process)  # still serving after all of it
    process.send_signal(signal.SIGTERM)
    assert group.wait(process, 20) == 0
    assert "node stopping (signal 15)" in group.log(process)
    assert not alive(pids[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_wrong_node_key_is_refused_with_the_reason(node) -> None:
    root, coordinator, _, _ = node
    link = CoordinatorLink(coordinator.url, "clinic", generate_key_pair(root / "wrong.pem"))
    with pytest.raises(CoordinatorRefusedError, match="wrong key") as refused:
        link.poll([], 1)
    assert refused.value.status == 401
