"""Helpers of the coordinator tests: a project to bundle, and a node that speaks the protocol."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from roost.federation.keys import b64decode, b64encode

PYPROJECT = """\
[project]
name = "tiny"
dependencies = ["numpy>=1.26"]

[tool.roost]
"""


def tiny_project(directory: Path) -> Path:
    """The smallest directory `make_bundle` accepts."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT)
    return directory


def post(url: str, body: dict[str, Any], header: str = "") -> tuple[int, Any]:
    """POST JSON; (status, JSON answer), for errors as for successes."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            **({"Authorization": header} if header else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ProtocolNode:
    """A node as the protocol sees it: signs a challenge, polls and reports."""

    def __init__(self, url: str, name: str, key: Ed25519PrivateKey) -> None:
        self.url, self.name, self.key = url, name, key
        self.session = ""

    def log_in(self) -> None:
        status, answer = post(f"{self.url}/v1/nodes/challenge", {"node": self.name})
        assert status == 200, answer
        challenge = b64decode(answer["challenge"])
        status, answer = post(
            f"{self.url}/v1/nodes/session",
            {
                "node": self.name,
                "challenge": b64encode(challenge),
                "signature": b64encode(self.key.sign(challenge)),
            },
        )
        assert status == 200, answer
        self.session = answer["session"]

    def call(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return post(f"{self.url}{path}", body, f"Node {self.session}")

    def poll(self, running: list[str] = (), capacity: int = 1) -> dict[str, Any]:
        status, answer = self.call(
            "/v1/nodes/poll", {"running": list(running), "capacity": capacity}
        )
        assert status == 200, answer
        return answer

    def download(self, path: str) -> bytes:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Node {self.session}"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.read()


class NodeStandIn:
    """A node for the coordinator's own smoke test (the real one is `roost node`): polls in a
    thread, checks each bundle's publisher, runs its `roost client` in a subprocess, reports."""

    def __init__(
        self, node: ProtocolNode, partition: int, partitions: int, trusted: str, home: Path
    ):
        import threading

        self.node, self.partition, self.partitions = node, partition, partitions
        self.trusted, self.home = trusted, home
        self.clients: dict[str, Any] = {}
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> NodeStandIn:
        self.node.log_in()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.thread.join(timeout=10)
        for process in self.clients.values():
            process.kill()
            process.wait()

    def _loop(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(OSError):  # the coordinator is down a moment: keep trying
                self._step()
            self.halt.wait(0.2)

    def _step(self) -> None:
        for run, process in list(self.clients.items()):
            if process.poll() is not None:
                del self.clients[run]
                status = "exited" if process.returncode == 0 else "failed"
                self.node.call("/v1/nodes/report", {"run": run, "status": status})
        answer = self.node.poll(list(self.clients), capacity=2 - len(self.clients))
        for run in answer["stop"]:
            if run in self.clients:
                self.clients[run].terminate()
        for assignment in answer["assign"]:
            self._start(assignment)

    def _start(self, assignment: dict[str, Any]) -> None:
        import subprocess
        import sys

        from roost.federation.bundle import BundleRefusedError, unpack_bundle, verify_bundle

        run = str(assignment["run"])
        data = self.node.download(assignment["bundle_url"])
        signature = assignment["signature"] and b64decode(assignment["signature"])
        try:
            verify_bundle(data, signature, assignment["publisher_key"], [self.trusted])
        except BundleRefusedError as error:
            self.node.call(
                "/v1/nodes/report", {"run": run, "status": "refused", "reason": str(error)}
            )
            return
        workdir = self.home / "runs" / run
        unpack_bundle(data, workdir / "app")
        overrides = [
            part
            for key, value in assignment["run_config"].items()
            for part in (
                "--run-config",
                f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}",
            )
        ]
        command = [
            sys.executable, "-m", "roost.cli", "client", "--app", str(workdir / "app"),
            "--server", assignment["server"], "--node-id", self.node.name,
            "--token", assignment["token"], "--partition-id", str(self.partition),
            "--num-partitions", str(self.partitions), "--reconnect-timeout", "120", "--quiet",
            *overrides,
        ]  # fmt: skip
        with (workdir / "client.log").open("wb") as log:
            self.clients[run] = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=log)
        self.node.call("/v1/nodes/report", {"run": run, "status": "started"})


def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found or (candidates[-1] if candidates else None)


def start_postgres() -> tuple[str, Any]:
    """A throwaway PostgreSQL server: (its SQLAlchemy URL, a function that stops and removes it).
    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (in a
    directory of its own: pytest's are readable by their owner only)."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; CI installs it)")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="roost-postgres-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(directory, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = directory / "data"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "roost", "--no-sync"], **quiet
    )
    options = f"-k {directory} -p {port} -c listen_addresses=127.0.0.1 -F"
    start = [*as_user, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(directory / "log")]
    try:
        subprocess.run([*start, "start"], **quiet)
    except subprocess.CalledProcessError:
        shutil.rmtree(directory, ignore_errors=True)
        raise

    def stop() -> None:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **quiet
        )

    return f"postgresql+psycopg://roost@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture():
    """A PostgreSQL server: ROOST_TEST_POSTGRES_URL's, else a throwaway one started here."""
    if url := os.environ.get("ROOST_TEST_POSTGRES_URL"):
        yield url
        return
    url, stop = start_postgres()
    try:
        yield url
    finally:
        stop()


@pytest.fixture(
    name="db_url", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
)
def db_url_fixture(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = f"roost_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()
