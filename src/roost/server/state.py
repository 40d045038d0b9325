"""Durable server state: every completed round recorded so that a restarted server resumes the run.

A state directory holds `state.sqlite` and one `round-NNNNNN.npz` per kept round. Each `.npz` holds
the global parameters and every array of the strategy's state; the SQLite row beside it holds the
round number, the rest of the strategy state (JSON with references to those arrays), the sampler's
RNG state, the History so far, and the `.npz`'s SHA-256.

A simulation's node states (each node's `Context.state`) are recorded with the round: their arrays
in the same `.npz`, the rest as JSON in a `node_states` row written in the same transaction.

A round is recorded in two steps, each atomic: the `.npz` is written to a temporary file and renamed
into place, then the row is committed in one SQLite transaction. A server killed at any moment
leaves either the previous round as the latest complete one or the new one, never a half of it.
Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from roost.core.files import atomic_write_bytes, unwritable_reason
from roost.errors import ConfigurationError, RoostError
from roost.server.history import History
from roost.server.loop import ServerState
from roost.server.tree_codec import decode_tree, encode_tree

log = logging.getLogger(__name__)

DATABASE_NAME = "state.sqlite"
SCHEMA_VERSION = 2
# Version 1 had no node states: such a directory is read (its rounds' node states are empty) and
# marked version 2, so that a roost that would drop node states no longer resumes it.
_UPGRADABLE_VERSIONS = ("1",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    server_round INTEGER PRIMARY KEY,
    arrays_file TEXT NOT NULL,
    arrays_sha256 TEXT NOT NULL,
    num_parameters INTEGER NOT NULL,
    strategy_state TEXT NOT NULL,
    rng_state TEXT NOT NULL,
    history TEXT NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS node_states (
    server_round INTEGER PRIMARY KEY,
    states TEXT NOT NULL
);
"""


class StateError(RoostError):
    """A state directory cannot be used (wrong version, or no intact round to resume from)."""


# -- the store -----------------------------------------------------------------------------------


class StateStore:
    """Records completed rounds in `directory` and loads the latest intact one.

    Args:
        directory: created if missing; must be writable.
        keep: how many of the latest rounds keep their `.npz` (older ones are deleted).

    Every way the directory can fail (a damaged database, a full disk, no permission) is a
    `StateError` that names the file and says what to do.
    """

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ConfigurationError(f"keep must be an int >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.database = self.directory / DATABASE_NAME
        self.keep = keep
        check_writable(self.directory, "state directory")
        for leftover in self.directory.glob(".round-*.tmp"):  # a write cut short by a crash
            leftover.unlink(missing_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] in _UPGRADABLE_VERSIONS:
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(
                    f"{self.directory} holds state of schema version {row[0]}; this roost "
                    f"reads version {SCHEMA_VERSION}"
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose statements commit together when the block ends without error."""
        try:
            db = sqlite3.connect(self.database, timeout=30.0)
            try:
                db.execute("PRAGMA synchronous = FULL")
                with db:
                    yield db
            finally:
                db.close()
        except sqlite3.DatabaseError as error:
            raise StateError(_database_trouble(self.database, error)) from None

    def run_settings(self) -> dict[str, Any] | None:
        """The settings recorded when the run began (None: recorded before roost kept them)."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'run_settings'").fetchone()
        return None if row is None else json.loads(row[0])

    def record_run_settings(self, settings: Mapping[str, Any]) -> None:
        """Record what the run's result depends on, so that a resume can be checked against it."""
        try:
            text = json.dumps(dict(settings), sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                f"run settings must be JSON scalars, lists or dicts to be recorded: {error}"
            ) from None
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('run_settings', ?)", (text,)
            )

    def rounds(self) -> list[int]:
        """The recorded rounds, oldest first."""
        with self._connect() as db:
            return [
                r for (r,) in db.execute("SELECT server_round FROM rounds ORDER BY server_round")
            ]

    def save(self, state: ServerState) -> None:
        """Record one completed round (usable as the loop's `on_round_end`).

        Raises `StateError` when the round cannot be written (full disk, no permission): the
        rounds recorded before stay intact, so the run can be resumed once that is fixed.
        """
        parameters = [np.asarray(p) for p in state.parameters]
        state_arrays: list[np.ndarray] = []
        strategy_json = json.dumps(
            encode_tree(state.strategy_state, state_arrays, "strategy state")
        )
        nodes_json = json.dumps(_encode_node_states(state.node_states, state_arrays))
        buffer = io.BytesIO()
        np.savez(buffer, *parameters, *state_arrays)
        data = buffer.getvalue()
        name = f"round-{state.server_round:06d}.npz"
        try:
            atomic_write_bytes(self.directory / name, data)
        except OSError as error:
            raise StateError(
                f"cannot write the state of round {state.server_round} to "
                f"{self.directory / name}: {error.strerror or error}; free disk space or fix "
                "the directory's permissions, then restart the server with --resume"
            ) from None
        with self._connect() as db:  # one transaction: the row is there entirely or not at all
            db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.server_round,
                    name,
                    hashlib.sha256(data).hexdigest(),
                    len(parameters),
                    strategy_json,
                    json.dumps(state.rng_state),
                    state.history.to_json(),
                    time.time(),
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO node_states VALUES (?, ?)", (state.server_round, nodes_json)
            )
            dropped = db.execute(
                "SELECT arrays_file FROM rounds WHERE server_round <= ? OR server_round > ?",
                (state.server_round - self.keep, state.server_round),
            ).fetchall()
            for table in ("rounds", "node_states"):
                db.execute(
                    f"DELETE FROM {table} WHERE server_round <= ? OR server_round > ?",
                    (state.server_round - self.keep, state.server_round),
                )
        # Only the files of the rows just dropped: a file this database does not know about
        # may belong to a run that could still be resumed.
        for (dropped_name,) in dropped:
            if dropped_name != name:
                (self.directory / dropped_name).unlink(missing_ok=True)
        log.debug("saved the state after round %d in %s", state.server_round, self.directory)

    def load(self) -> ServerState | None:
        """The latest round whose files and row are intact, or None when nothing was recorded.

        A damaged round (its model file missing or altered, or its row unreadable) is skipped
        with a warning, and the round before it is used.
        """
        with self._connect() as db:
            # A round without a node_states row was recorded before they were: none were kept.
            rows = db.execute(
                "SELECT server_round, arrays_file, arrays_sha256, num_parameters, strategy_state, "
                "rng_state, history, COALESCE(states, '{}') FROM rounds "
                "LEFT JOIN node_states USING (server_round) ORDER BY server_round DESC"
            ).fetchall()
        if not rows:
            return None
        for row in rows:
            try:
                return self._decode_row(*row)
            except _DamagedRound as damage:
                log.warning("state of round %d unusable: %s", row[0], damage)
        raise StateError(
            f"no recorded round in {self.directory} is intact; start a new run with an empty "
            "state directory"
        )

    def _decode_row(
        self,
        server_round: int,
        name: str,
        digest: str,
        num_parameters: int,
        strategy_json: str,
        rng_json: str,
        history: str,
        nodes_json: str,
    ) -> ServerState:
        path = self.directory / str(name)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise _DamagedRound(f"cannot read {path}: {error.strerror or error}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise _DamagedRound(f"{path} is corrupted")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = [archive[f"arr_{i}"] for i in range(len(archive.files))]
            return ServerState(
                server_round=int(server_round),
                parameters=arrays[:num_parameters],
                strategy_state=decode_tree(json.loads(strategy_json), arrays[num_parameters:]),
                rng_state=json.loads(rng_json),
                history=History.from_json(history),
                node_states=_decode_node_states(nodes_json, arrays[num_parameters:]),
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            # JSONDecodeError is a ValueError: a garbled row, like a garbled model file.
            raise _DamagedRound(f"its row in {self.database} is damaged ({error})") from None


def _encode_node_states(
    node_states: Mapping[str, Mapping[str, Any]], arrays: list[np.ndarray]
) -> dict[str, Any]:
    """The node states' JSON form (their arrays appended to `arrays`), types kept exactly."""
    try:
        return {
            str(node): encode_tree(dict(state), arrays, f"node {node}'s Context.state", exact=True)
            for node, state in node_states.items()
        }
    except ConfigurationError as error:
        raise ConfigurationError(
            f"{error}; a run with a state directory records every node's Context.state with each "
            "round, so keep only such values there (or run without a state directory)"
        ) from None


def _decode_node_states(nodes_json: str, arrays: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    decoded = decode_tree(json.loads(nodes_json), arrays)
    if not isinstance(decoded, dict) or not all(isinstance(s, dict) for s in decoded.values()):
        raise ValueError("the node states are not a dict of dicts")
    return decoded


class _DamagedRound(Exception):
    """One recorded round cannot be used; an older one may still be."""


def _database_trouble(database: Path, error: sqlite3.DatabaseError) -> str:
    """What went wrong with the state database, and what to do about it."""
    text = str(error)
    if isinstance(error, sqlite3.OperationalError) and (
        "readonly" in text or "unable to open" in text or "disk" in text or "full" in text
    ):
        return (
            f"cannot write the state database {database}: {text}; free disk space or fix the "
            "permissions of its directory, then start the server again"
        )
    return (
        f"{database} is not a readable roost state database ({text}); restore it from a "
        "backup, or move the state directory away and start a new run"
    )


def check_writable(directory: Path, what: str) -> None:
    """Create `directory` if needed and make sure files can be written in it, or raise."""
    if (reason := unwritable_reason(directory)) is not None:
        raise ConfigurationError(
            f"cannot write to the {what} {directory}: {reason}; choose another "
            "directory or fix its permissions"
        )


def open_state(
    state_dir: str | Path | None,
    resume: bool,
    out_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[StateStore | None, ServerState | None]:
    """The state store of `state_dir` (if any), and the recorded state to resume from (if any).

    The rules every run follows (simulation, server, Flower projects): `resume` needs a directory
    that records a completed round; a directory that records one needs `resume`. Checks now, not
    after the last round, that `out_dir` (if any) can be written. `settings` (what the result
    depends on, by the names the user gave them, e.g. ``{"--clients": 10}``) are recorded by a new
    run and must be the same on resume: a changed one is refused in one line naming it. Whether the
    run may continue the recorded one (same model shape, enough rounds) is the round loop's check.
    """
    if out_dir is not None:
        check_writable(Path(out_dir), "output directory")
    if state_dir is None:
        if resume:
            raise ConfigurationError("resume needs a state directory: pass state_dir (--state DIR)")
        return None, None
    database = Path(state_dir) / DATABASE_NAME
    if resume and not database.is_file():
        raise ConfigurationError(
            f"nothing to resume: {database} does not exist; check the state directory, or "
            "start a new run without resume (--resume)"
        )
    store = StateStore(state_dir)
    saved = store.load()
    if saved is not None and not resume:
        raise ConfigurationError(
            f"{state_dir} already records a run (up to round {saved.server_round}); pass "
            "resume=True (--resume) to continue it, or choose an empty state directory"
        )
    if resume and saved is None:
        raise ConfigurationError(
            f"nothing to resume: {database} records no completed round; check the state "
            "directory, or start a new run without resume (--resume)"
        )
    if settings is not None:
        if saved is None:
            store.record_run_settings(settings)
        else:
            check_same_settings(store.run_settings(), settings, state_dir)
    if saved is not None:
        log.info("resuming after round %d (recorded in %s)", saved.server_round, state_dir)
    return store, saved


def last_recorded_round(state_dir: str | Path) -> int | None:
    """The latest round recorded in `state_dir` (None when it records none); changes nothing."""
    database = Path(state_dir) / DATABASE_NAME
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT MAX(server_round) FROM rounds").fetchone()
    except sqlite3.DatabaseError:
        return None  # opening the store for the run reports what is wrong
    return None if row is None else row[0]


def check_same_settings(
    recorded: Mapping[str, Any] | None, settings: Mapping[str, Any], state_dir: str | Path
) -> None:
    """Refuse, in one line, a resume whose `settings` differ from those the run `recorded`."""
    if recorded is None:
        log.warning(
            "%s was recorded by an older roost that kept no run settings; resuming without "
            "checking that they are unchanged",
            state_dir,
        )
        return
    now = json.loads(json.dumps(dict(settings), sort_keys=True))  # as recorded: tuples as lists
    changed = [
        f"{name} was {_shown(recorded.get(name))}, now {_shown(now.get(name))}"
        for name in sorted(set(recorded) | set(now))
        if recorded.get(name) != now.get(name)
    ]
    if changed:
        raise ConfigurationError(
            f"cannot resume the run in {state_dir} with other settings: {'; '.join(changed)}. "
            "A resumed run keeps every setting but the number of rounds: drop the change, or "
            "start a new run in an empty state directory"
        )


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def recording(
    store: StateStore | None, on_round_end: Callable[[ServerState], None] | None
) -> Callable[[ServerState], None] | None:
    """Record each round in `store`, then call `on_round_end` (so a callback that stops the run
    never loses the round that just completed); None when there is neither."""
    if store is None and on_round_end is None:
        return None

    def round_end(state: ServerState) -> None:
        if store is not None:
            store.save(state)
        if on_round_end is not None:
            on_round_end(state)

    return round_end
