"""The coordinator's store, on SQLite and on a real PostgreSQL server: migrations that keep an
existing federation, secrets kept hashed, one-use challenges, and a coordinator on each."""

from __future__ import annotations

import time

import pytest
from coordinator_support import (  # and the fixtures db_url and postgres
    ProtocolNode,
    db_url_fixture,  # noqa: F401
    postgres_fixture,  # noqa: F401
    tiny_project,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, inspect, text

from roost.errors import ConfigurationError
from roost.federation.bundle import make_bundle
from roost.federation.control import ControlClient
from roost.federation.coordinator import Coordinator, CoordinatorConfig
from roost.federation.keys import public_key_line
from roost.federation.store import Store, upgrade_schema


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


def test_coordinator_serves_people_and_nodes_on_sqlite_and_postgresql(db_url, tmp_path):
    config = CoordinatorConfig(data_dir=tmp_path / "fed", address="127.0.0.1:0", db=db_url)
    coordinator = Coordinator(config)
    coordinator.start()
    try:
        key = Ed25519PrivateKey.generate()
        coordinator.store.register_node("n0", public_key_line(key))
        node = ProtocolNode(coordinator.url, "n0", key)
        node.log_in()
        node.poll(capacity=0)  # online, but no room: the run stays queued
        ada = ControlClient(coordinator.url, coordinator.store.add_person("ada"))
        run = ada.submit(make_bundle(tiny_project(tmp_path / "tiny")), None, None, federation="f")
        assert [(n["name"], n["online"]) for n in ada.nodes()] == [("n0", True)]
        assert ada.runs()[0]["status"] == "queued"
        ada.stop(run)
        answer = ada.follow_log(run, lambda text: None, follow=True, interval=0.05)
        assert answer["status"] == "stopped"
    finally:
        coordinator.close()


def test_coordinator_tokens_never_start_with_a_dash(db_url, monkeypatch):
    # `--token -abc...` reads as an option to argparse: the store draws again instead.
    from roost.federation import store as store_module

    drawn = iter(["-dash-first", "fine-token"])
    monkeypatch.setattr(store_module.secrets, "token_urlsafe", lambda size: next(drawn))
    store = Store.open(db_url)
    assert store.add_person("ada") == "fine-token"
