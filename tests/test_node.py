"""The long-lived node, in this process: its config, its backoff, and what it refuses (fast)."""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from roost.core.backoff import Backoff
from roost.errors import ConfigurationError
from roost.federation.bundle import BundleRefusedError, make_bundle, sign_bundle
from roost.federation.keys import (
    b64encode,
    fingerprint,
    generate_key_pair,
    load_private_key,
    public_key_line,
)
from roost.federation.node import Node
from roost.federation.node_config import load_node_config
from roost.federation.node_link import (
    CoordinatorLink,
    CoordinatorRefusedError,
    CoordinatorUnreachableError,
)
from roost.federation.node_runs import LocalRun, check_bundle, data_environment

PROJECT = """\
[project]
name = "needs"
dependencies = [{requirements}]

[tool.roost.components]
client = "needs.client:client_fn"
"""


def write_config(directory: Path, **extra: str) -> Path:
    generate_key_pair(directory / "node.pem", overwrite=True)
    lines = {
        "name": '"clinic"',
        "coordinator": '"http://127.0.0.1:9"',
        "private_key": '"node.pem"',
        "trusted-publishers": '["alice.pub"]',  # `-` and `_` alike
        "partition_id": "1",
        "num_partitions": "3",
        "max_concurrent_runs": "1",
        **extra,
    }
    text = "".join(f"{key} = {value}\n" for key, value in lines.items())
    path = directory / "node.toml"
    path.write_text(text + '[data]\ntrain = "data/train.csv"\n')
    return path


@pytest.fixture
def keys(tmp_path: Path):
    return generate_key_pair(tmp_path / "alice.pem"), generate_key_pair(tmp_path / "mallory.pem")


class FakeLink:
    """The coordinator's side of the node protocol, as calls: hands out `assign` once."""

    def __init__(self, assign: list[dict[str, Any]], bundles: dict[str, bytes]) -> None:
        self.assign, self.bundles = assign, bundles
        self.reports: list[tuple[Any, str, str]] = []
        self.polls: list[tuple[list[Any], int]] = []
        self.base_url = "http://fake"

    def poll(self, running: list[Any], capacity: int) -> dict[str, Any]:
        self.polls.append((running, capacity))
        assign, self.assign = self.assign, []
        return {"assign": assign, "stop": []}

    def download(self, url: str) -> bytes:
        return self.bundles[url.rsplit("/", 1)[-1]]

    def report(self, run: Any, status: str, reason: str) -> None:
        self.reports.append((run, status, reason))


def assignment(run: int, bundle: bytes, key=None) -> dict[str, Any]:
    sha256 = hashlib.sha256(bundle).hexdigest()
    return {
        "run": run,
        "server": "127.0.0.1:1",
        "token": "t",
        "root_certificate": None,
        "bundle_sha256": sha256,
        "bundle_url": f"/v1/nodes/bundles/{sha256}",
        "signature": b64encode(sign_bundle(bundle, key)) if key else None,
        "publisher_key": public_key_line(key) if key else None,
    }


def project_bundle(root: Path, requirements: str) -> bytes:
    project = root / f"project-{abs(hash(requirements))}"
    (project / "needs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PROJECT.format(requirements=requirements))
    (project / "needs" / "client.py").write_text("client_fn = None\n")
    return make_bundle(project)


def test_the_node_config_reads_paths_from_its_directory(tmp_path: Path) -> None:
    config = load_node_config(write_config(tmp_path))
    assert (config.name, config.partition_id, config.num_partitions) == ("clinic", 1, 3)
    assert config.trusted_publishers == (tmp_path / "alice.pub",)
    assert config.runs_dir == tmp_path / "runs"
    assert data_environment(config) == {
        "ROOST_NODE_NAME": "clinic",
        "ROOST_DATA_TRAIN": str(tmp_path / "data" / "train.csv"),
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_concurent_runs": "2"}, "did you mean max_concurrent_runs"),
        ({"coordinator": '"http://10.1.2.3:9443"'}, "plain HTTP to another machine"),
        ({"partition_id": "3"}, "partition_id must be in"),
        ({"name": '"a b"'}, "must start with a letter or digit"),
        ({"allow_unsigned": '"yes"'}, "allow_unsigned must be bool"),
    ],
)
def test_a_bad_node_config_gets_one_line(tmp_path: Path, extra, message) -> None:
    with pytest.raises(ConfigurationError, match=message) as refused:
        load_node_config(write_config(tmp_path, **extra))
    assert "\n" not in str(refused.value)


def test_backoff_grows_to_its_cap_with_its_own_jitter() -> None:
    random.seed(7)
    global_state = random.getstate()
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[3:])) == 3  # jittered, not one fixed value
    assert random.getstate() == global_state  # the global generator is never drawn from
    again = Backoff(initial=1.0, maximum=8.0, factor=2.0, rng=random.Random(3))
    assert [again.next_delay() for _ in range(6)] == delays
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_the_node_refuses_untrusted_unsigned_and_unmet_bundles_with_reasons(
    tmp_path: Path, keys
) -> None:
    alice, mallory = keys
    good = project_bundle(tmp_path, '"numpy>=1.0"')
    needy = project_bundle(tmp_path, '"numpy>=1.0", "no-such-package-roost-xyz>=2"')
    assignments = [
        assignment(1, good, mallory),
        assignment(2, good),
        assignment(3, needy, alice),
        {**assignment(4, good, alice), "bundle_sha256": "0" * 64},
    ]
    bundles = {hashlib.sha256(b).hexdigest(): b for b in (good, needy)}
    bundles["0" * 64] = good
    link = FakeLink(assignments, bundles)
    node = Node(load_node_config(write_config(tmp_path)), link=link)
    node.step()
    reasons = {run: (status, reason) for run, status, reason in link.reports}
    assert {status for status, _ in reasons.values()} == {"refused"}
    assert fingerprint(mallory) in reasons[1][1] and "does not trust" in reasons[1][1]
    assert "unsigned" in reasons[2][1]
    assert "lacks requirements no-such-package-roost-xyz>=2" in reasons[3][1]
    assert "not the assigned" in reasons[4][1]
    assert node.runs == {} and link.polls == [([], 1)]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_node_keeps_retrying_a_coordinator_that_is_down(tmp_path: Path, keys, caplog) -> None:
    class DownLink(FakeLink):
        def poll(self, running, capacity):
            if len(self.polls) >= 3:
                stop.set()
            self.polls.append((running, capacity))
            raise CoordinatorUnreachableError("connection refused")

    stop = threading.Event()
    node = Node(load_node_config(write_config(tmp_path)), link=DownLink([], {}))
    node.backoff = Backoff(initial=0.001, maximum=0.002)
    with caplog.at_level("WARNING"):
        node.serve(stop)
    attempts = [r.message for r in caplog.records if "unreachable" in r.message]
    assert len(attempts) == 4 and "attempt 4" in attempts[-1]


def test_a_run_id_or_bundle_url_cannot_lead_the_node_elsewhere(tmp_path: Path, keys) -> None:
    alice, _ = keys
    (tmp_path / "app").mkdir()  # what runs/../app would be
    (tmp_path / "app" / "keep.txt").write_text("the owner's")
    good = project_bundle(tmp_path, '"numpy>=1.0"')
    link = FakeLink([assignment("..", good, alice)], {hashlib.sha256(good).hexdigest(): good})
    node = Node(load_node_config(write_config(tmp_path)), link=link)
    node.step()
    [(run, status, reason)] = link.reports
    assert (run, status) == ("..", "failed") and "not a plain name" in reason
    assert (tmp_path / "app" / "keep.txt").read_text() == "the owner's"
    real = CoordinatorLink("http://127.0.0.1:9", "clinic", alice)
    real.session = "a session that must not travel"
    with pytest.raises(CoordinatorRefusedError, match="not a path on the coordinator"):
        real.download("http://elsewhere.example/bundle")


def test_roost_node_init_writes_a_key_and_a_config_that_loads(tmp_path: Path, capsys) -> None:
    from roost.cli import main

    bad = ["node", "--init", str(tmp_path / "bad"), "--name", "x", "--coordinator", "ftp://x"]
    assert main(bad) == 2
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    directory = tmp_path / "clinic"
    assert main(["node", "--init", str(directory), "--name", "clinic"]) == 0
    printed = capsys.readouterr().out
    config = load_node_config(directory / "node.toml")
    assert (config.name, config.coordinator) == ("clinic", "https://127.0.0.1:9443")
    assert public_key_line(load_private_key(config.private_key)) in printed
    assert main(["node", "--init", str(directory), "--name", "clinic"]) == 2
    assert "already exists" in capsys.readouterr().err


class FakeProcess:
    """A run client's process as the node sees it: running until `code` is set."""

    pid = 4242
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_the_node_keeps_to_its_run_limit_and_reports_a_crash(tmp_path, keys, monkeypatch) -> None:
    alice, _ = keys
    good = project_bundle(tmp_path, '"numpy>=1.0"')
    link = FakeLink(
        [assignment(1, good, alice), assignment(2, good, alice)],
        {hashlib.sha256(good).hexdigest(): good},
    )
    process = FakeProcess()

    def fake_start(config, assigned, bundle):
        directory = config.runs_dir / str(assigned["run"])
        directory.mkdir(parents=True)
        (directory / "log.txt").write_text("training\nroost: error: out of memory\n")
        return LocalRun(assigned["run"], process, directory)

    monkeypatch.setattr("roost.federation.node.start_run", fake_start)
    node = Node(load_node_config(write_config(tmp_path)), link=link)  # max_concurrent_runs = 1
    node.step()
    assert link.reports == [
        (1, "started", "client pid 4242"),
        (2, "refused", "node clinic runs its limit of 1 now"),
    ]
    node.step()
    assert link.polls[-1] == ([1], 0)
    process.code = 3
    node.step()
    assert link.reports[-1] == (
        1, "failed", "the run's client exited with status 3: roost: error: out of memory"
    )  # fmt: skip
    assert node.runs == {} and link.polls[-1] == ([], 1)


def test_allow_install_installs_what_is_missing_and_says_when_pip_fails(
    tmp_path: Path, keys, monkeypatch
) -> None:
    alice, _ = keys
    needy = project_bundle(tmp_path, '"numpy>=1.0", "no-such-package-roost-xyz>=2"')
    config = load_node_config(write_config(tmp_path, allow_install="true"))
    commands = []

    def fake_pip(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(BundleRefusedError, match="failed: ERROR: No matching distribution"):
        check_bundle(config, [alice.public_key()], assignment(1, needy, alice), needy)
    assert commands[0][1:4] == ["-m", "pip", "install"]
    assert commands[0][-1] == "no-such-package-roost-xyz>=2"  # only what is missing
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: commands.append(command) or (
        subprocess.CompletedProcess(command, 0, "", "")
    ))  # fmt: skip
    with pytest.raises(BundleRefusedError, match="still lacks no-such-package-roost-xyz>=2"):
        check_bundle(config, [alice.public_key()], assignment(1, needy, alice), needy)


def test_a_coordinator_that_dies_mid_answer_is_unreachable_not_a_crash(keys) -> None:
    """Killed while it answered (a SIGKILLed coordinator): the node retries as for any outage."""
    alice, _ = keys
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_half() -> None:
            connection, _ = listener.accept()
            with connection:
                # Read the whole request first: closing on unread bytes would reset the
                # connection instead of cutting the answer short.
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n")
                connection.shutdown(socket.SHUT_WR)
                while connection.recv(65536):  # until the node gives up on the answer
                    pass

        server = threading.Thread(target=answer_half, daemon=True)
        server.start()
        link = CoordinatorLink(f"http://127.0.0.1:{listener.getsockname()[1]}", "clinic", alice)
        link.session = "a session"
        with pytest.raises(CoordinatorUnreachableError, match="IncompleteRead"):
            link.poll([], 1)
        server.join(timeout=10)
