"""State and disk trouble: one clear error naming the file and what to do, never a traceback, and
never the loss of a round a resume could still use."""

from __future__ import annotations

import errno
import re
import sqlite3

import numpy as np
import pytest
from test_state import state

import roost
import roost.server.state as state_module
from roost.errors import ConfigurationError
from roost.server.state import DATABASE_NAME, StateError, StateStore


def test_a_garbled_database_is_a_state_error_naming_it(tmp_path):
    (tmp_path / DATABASE_NAME).write_bytes(b"this is not SQLite at all, just bytes " * 100)
    with pytest.raises(StateError) as caught:
        StateStore(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / DATABASE_NAME) in message
    assert "restore it from a backup" in message


def test_a_garbled_history_row_falls_back_to_the_round_before(tmp_path, caplog):
    store = StateStore(tmp_path, keep=3)
    for server_round in (1, 2, 3):
        store.save(state(server_round, float(server_round)))
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE rounds SET history = '{not json' WHERE server_round = 3")
        db.execute("UPDATE rounds SET rng_state = '[' WHERE server_round = 2")
    loaded = store.load()
    assert loaded.server_round == 1
    np.testing.assert_array_equal(loaded.parameters[0], np.full((2, 3), 1.0))
    assert "state of round 3 unusable" in caplog.text and "damaged" in caplog.text


def test_a_full_disk_is_a_state_error_and_keeps_the_rounds_before(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.save(state(1, 1.0))

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_module, "atomic_write_bytes", disk_full)
    with pytest.raises(StateError, match=r"No space left on device.*--resume"):
        store.save(state(2, 2.0))
    monkeypatch.undo()
    assert store.load().server_round == 1


def test_a_state_directory_that_cannot_be_written_is_refused_at_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(
        ConfigurationError, match=re.escape(f"cannot write to the state directory {blocker}")
    ):
        StateStore(blocker / "state")


def test_an_output_directory_that_cannot_be_written_is_refused_before_serving(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot write to the output directory"):
        roost.start_server(server_address="127.0.0.1:0", out_dir=blocker / "out")


@pytest.mark.parametrize("database", ["missing", "empty", "no rounds"])
def test_resume_refuses_when_there_is_nothing_to_resume_and_deletes_nothing(tmp_path, database):
    """Round files of a run whose database is gone are still what a repaired resume needs."""
    StateStore(tmp_path).save(state(1, 1.0))
    (tmp_path / DATABASE_NAME).unlink()
    if database == "empty":
        (tmp_path / DATABASE_NAME).write_bytes(b"")
    elif database == "no rounds":
        StateStore(tmp_path)
    with pytest.raises(ConfigurationError, match="nothing to resume"):
        roost.start_server(server_address="127.0.0.1:0", state_dir=tmp_path, resume=True)
    assert (tmp_path / "round-000001.npz").exists()


def test_saving_deletes_only_the_files_of_rounds_it_drops(tmp_path):
    """A new run in a directory holding an older run's files leaves those files alone."""
    StateStore(tmp_path, keep=1).save(state(5, 5.0))
    (tmp_path / DATABASE_NAME).unlink()  # the older run's database is lost, its file is not
    store = StateStore(tmp_path, keep=1)
    for server_round in (1, 2, 3):
        store.save(state(server_round, float(server_round)))
    assert sorted(p.name for p in tmp_path.glob("round-*.npz")) == [
        "round-000003.npz",
        "round-000005.npz",
    ]
