"""The coordinator's store, on SQLite and on a real PostgreSQL server: migrations that keep an
existing federation, secrets kept hashed, one-use challenges."""

from __future__ import annotations

import os
import secrets
import time

import pytest
from coordinator_support import start_postgres
from sqlalchemy import create_engine, inspect, text

from roost.errors import ConfigurationError
from roost.federation.store import Store, upgrade_schema


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server: ROOST_TEST_POSTGRES_URL's, else a throwaway one started here."""
    if url := os.environ.get("ROOST_TEST_POSTGRES_URL"):
        yield url
        return
    url, stop = start_postgres()
    try:
        yield url
    finally:
        stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path):
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


def test_coordinator_store_upgrades_an_old_schema_and_keeps_its_rows(db_url):
    url = db_url
    engine = create_engine(url)
    upgrade_schema(engine, "0001")  # the database an older roost made
    assert "message" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO runs (owner, federation, project, status, bundle_sha256, "
                "run_config, stop_requested, created) "
                "VALUES ('ada', 'f', 'p', 'completed', 'ab', '[]', false, 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO nodes (name, public_key, registered, capacity, runs_served) "
                "VALUES ('n0', 'k', 1, 0, 3)"
            )
        )
    engine.dispose()
    store = Store.open(url)
    try:
        (run,) = store.runs()
        assert (run["owner"], run["status"], run["message"]) == ("ada", "completed", "")
        node = store.node("n0")
        assert (node["runs_served"], node["failures"]) == (3, 0)
    finally:
        store.close()


def test_coordinator_store_keeps_only_digests_of_tokens(db_url):
    store = Store.open(db_url)
    try:
        token = store.add_person("ada", operator=True)
        assert store.person(token)["name"] == "ada"
        assert store.person(token + "x") is None
        with store.engine.connect() as connection:
            stored = connection.execute(text("SELECT token_sha256 FROM people")).scalar_one()
        assert stored != token and len(stored) == 64
        with pytest.raises(ConfigurationError, match="exists already"):
            store.add_person("ada")
        store.register_node("n0", "key")
        session = store.new_session("n0")
        assert store.session_node(session) == "n0" and store.session_node("forged") is None
    finally:
        store.close()


def test_coordinator_challenges_are_one_use_and_expire(db_url, monkeypatch):
    store = Store.open(db_url)
    try:
        challenge = store.new_challenge("n0")
        assert not store.take_challenge("n1", challenge)  # issued to another node
        assert store.take_challenge("n0", store.new_challenge("n0"))
        late = store.new_challenge("n0")
        monkeypatch.setattr(time, "time", lambda: 10**12)
        assert not store.take_challenge("n0", late)
    finally:
        store.close()


def test_coordinator_refuses_a_database_url_it_cannot_use(tmp_path):
    with pytest.raises(ConfigurationError, match="not a database URL"):
        Store.open("nosuchdialect://x")
