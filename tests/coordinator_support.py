"""Helpers of the coordinator tests: a project to bundle, a node that speaks the protocol and
the databases."""

from __future__ import annotations

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


POSTGRES_URL = "ROOST_TEST_POSTGRES_URL"
"""The PostgreSQL server the tests use; `.ci/run` (through `.ci/with-postgres`) sets it."""


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture():
    """The PostgreSQL server of ROOST_TEST_POSTGRES_URL; without it, PostgreSQL is skipped."""
    url = os.environ.get(POSTGRES_URL)
    if not url:
        pytest.skip(f"{POSTGRES_URL} is not set (.ci/with-postgres CMD sets it, as CI does)")
    return url


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
