"""The coordinator's database: people, nodes, runs and who serves which run.

    store = Store.open("sqlite:///federation.db")  # or postgresql+psycopg://user@host/db
    token = store.add_person("ada", operator=True)  # shown once; only its sha256 is kept

Any SQLAlchemy URL works; SQLite (a file) is the embedded default and PostgreSQL is for
production. Opening a store applies the shipped Alembic migrations, so a newer roost upgrades an
existing federation's database in place and keeps its rows. Secrets (people's tokens, node
sessions, challenges) are stored as sha256 digests only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from roost.errors import ConfigurationError

CHALLENGE_TTL_S = 60.0
SESSION_TTL_S = 3600.0
FINISHED = ("completed", "failed", "stopped")
"""Statuses of a run that has ended; queued, starting and running are the others."""


def new_token() -> str:
    """A fresh random token (256 bits, from the OS CSPRNG) that never starts with `-`: people
    and run clients pass tokens as `--token TOKEN`, where argparse would take one that does
    for an option."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def digest(secret: str | bytes) -> str:
    """sha256 hex digest of a secret: what the store keeps instead of the secret itself."""
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()


def upgrade_schema(engine: Any, revision: str = "head") -> None:
    """Apply the shipped migrations to `engine`'s database up to `revision` (default: all)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _tune_sqlite(engine: Any) -> None:
    """Write-ahead logging, and a sync at checkpoints rather than at every commit: every node's
    poll writes (its last_seen), and a commit that waits for the disk each time caps the polls a
    coordinator can answer; a crash still loses at most the last few polls, never a run's state
    (that lives in the run's own checkpoint)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


class Store:
    """The coordinator's state behind one SQLAlchemy engine; every method is one transaction."""

    def __init__(self, engine: Any) -> None:
        from roost.federation import schema

        self.engine = engine
        self.tables = schema
        # SQLite allows one writer at a time; one lock keeps the coordinator's threads in line.
        self._lock = threading.RLock()

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to the database at `url` and bring its schema up to date."""
        try:
            from sqlalchemy import create_engine
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        except ImportError:
            raise ConfigurationError(
                "the coordinator needs SQLAlchemy and Alembic: pip install 'roost[federation]'"
            ) from None
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        try:
            engine = create_engine(url, **options)
        except (ArgumentError, NoSuchModuleError) as error:
            raise ConfigurationError(
                f"--db {url!r} is not a database URL SQLAlchemy can use: {error}"
            ) from None
        if url.startswith("sqlite"):
            _tune_sqlite(engine)
        upgrade_schema(engine)
        return cls(engine)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, self.engine.begin() as connection:
            yield connection

    def _rows(self, statement: Any) -> list[dict[str, Any]]:
        with self._transaction() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def _one(self, statement: Any) -> dict[str, Any] | None:
        rows = self._rows(statement)
        return rows[0] if rows else None

    # --- people ------------------------------------------------------------------------------

    def add_person(self, name: str, *, operator: bool = False) -> str:
        """Add a person and return their new token (the store keeps only its digest)."""
        people = self.tables.people
        if self._one(people.select().where(people.c.name == name)) is not None:
            raise ConfigurationError(f"a person named {name!r} exists already; choose another name")
        token = new_token()
        with self._transaction() as connection:
            connection.execute(
                people.insert().values(
                    name=name, token_sha256=digest(token), operator=operator, created=time.time()
                )
            )
        return token

    def person(self, token: str) -> dict[str, Any] | None:
        """The person whose token this is, or None."""
        people = self.tables.people
        return self._one(people.select().where(people.c.token_sha256 == digest(token)))

    # --- nodes -------------------------------------------------------------------------------

    def register_node(self, name: str, public_key: str) -> None:
        """Register (or re-key) node `name` with its Ed25519 public key (PEM)."""
        nodes = self.tables.nodes
        with self._transaction() as connection:
            if connection.execute(nodes.select().where(nodes.c.name == name)).first():
                connection.execute(
                    nodes.update().where(nodes.c.name == name).values(public_key=public_key)
                )
            else:
                connection.execute(
                    nodes.insert().values(
                        name=name,
                        public_key=public_key,
                        registered=time.time(),
                        capacity=0,
                        runs_served=0,
                        failures=0,
                    )
                )

    def node(self, name: str) -> dict[str, Any] | None:
        """The registered node `name`, or None."""
        nodes = self.tables.nodes
        return self._one(nodes.select().where(nodes.c.name == name))

    def nodes(self) -> list[dict[str, Any]]:
        """Every registered node, by name."""
        nodes = self.tables.nodes
        return self._rows(nodes.select().order_by(nodes.c.name))

    def new_challenge(self, node: str) -> bytes:
        """32 fresh random bytes for `node` to sign: one use, valid for a minute."""
        challenge = secrets.token_bytes(32)
        self._keep_digest(
            self.tables.challenges, "challenge_sha256", challenge, node, CHALLENGE_TTL_S
        )
        return challenge

    def take_challenge(self, node: str, challenge: bytes) -> bool:
        """Use up `challenge`: True if it was issued to `node` and has not expired."""
        table = self.tables.challenges
        where = (table.c.challenge_sha256 == digest(challenge)) & (table.c.node == node)
        with self._transaction() as connection:
            row = connection.execute(table.select().where(where)).first()
            connection.execute(table.delete().where(where))
        return row is not None and row.expires >= time.time()

    def new_session(self, node: str) -> str:
        """A session token for `node`, valid for an hour."""
        token = new_token()
        self._keep_digest(self.tables.node_sessions, "token_sha256", token, node, SESSION_TTL_S)
        return token

    def _keep_digest(
        self, table: Any, column: str, secret: str | bytes, node: str, ttl: float
    ) -> None:
        """Record the digest of a secret issued to `node` for `ttl` seconds in `table`, dropping
        the expired ones."""
        with self._transaction() as connection:
            connection.execute(table.delete().where(table.c.expires < time.time()))
            connection.execute(
                table.insert().values(
                    {column: digest(secret), "node": node, "expires": time.time() + ttl}
                )
            )

    def session_node(self, token: str) -> str | None:
        """The node a live session token belongs to, or None."""
        table = self.tables.node_sessions
        row = self._one(table.select().where(table.c.token_sha256 == digest(token)))
        return row["node"] if row and row["expires"] >= time.time() else None

    def update_node(self, name: str, **values: Any) -> None:
        """Set columns of node `name`."""
        nodes = self.tables.nodes
        with self._transaction() as connection:
            connection.execute(nodes.update().where(nodes.c.name == name).values(**values))

    def count_on_node(self, name: str, column: str) -> None:
        """Add one to the node's `runs_served` or `failures`."""
        nodes = self.tables.nodes
        with self._transaction() as connection:
            connection.execute(
                nodes.update().where(nodes.c.name == name).values({column: nodes.c[column] + 1})
            )

    # --- runs --------------------------------------------------------------------------------

    def add_run(
        self,
        *,
        owner: str,
        federation: str,
        project: str,
        bundle_sha256: str,
        signature: bytes | None,
        publisher_key: str | None,
        run_config: Sequence[str],
        wanted_nodes: int | None,
    ) -> int:
        """Queue a run; returns its id."""
        runs = self.tables.runs
        with self._transaction() as connection:
            result = connection.execute(
                runs.insert().values(
                    owner=owner,
                    federation=federation,
                    project=project,
                    status="queued",
                    message="",
                    bundle_sha256=bundle_sha256,
                    signature=signature,
                    publisher_key=publisher_key,
                    run_config=json.dumps(list(run_config)),
                    wanted_nodes=wanted_nodes,
                    stop_requested=False,
                    created=time.time(),
                )
            )
            return int(result.inserted_primary_key[0])

    def run(self, run_id: int) -> dict[str, Any] | None:
        """Run `run_id`, or None."""
        runs = self.tables.runs
        return self._one(runs.select().where(runs.c.id == run_id))

    def runs(self, *, owner: str | None = None, statuses: Sequence[str] = ()) -> list[dict]:
        """Runs, oldest first: those of `owner` (None: everyone's) with one of `statuses`."""
        runs = self.tables.runs
        query = runs.select().order_by(runs.c.id)
        if owner is not None:
            query = query.where(runs.c.owner == owner)
        if statuses:
            query = query.where(runs.c.status.in_(statuses))
        return self._rows(query)

    def update_run(self, run_id: int, **values: Any) -> None:
        """Set columns of run `run_id`."""
        runs = self.tables.runs
        with self._transaction() as connection:
            connection.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def add_assignment(self, run_id: int, node: str) -> str:
        """Assign `node` to the run with a fresh run token; returns the token."""
        token = new_token()
        table = self.tables.assignments
        with self._transaction() as connection:
            connection.execute(
                table.insert().values(
                    run=run_id, node=node, token=token, status="assigned", reason=""
                )
            )
        return token

    def clear_assignments(self, run_id: int) -> None:
        """Forget every assignment of run `run_id` (a start that did not finish)."""
        table = self.tables.assignments
        with self._transaction() as connection:
            connection.execute(table.delete().where(table.c.run == run_id))

    def assignments(self, *, run: int | None = None, node: str | None = None) -> list[dict]:
        """Assignments of one run or one node (or all)."""
        table = self.tables.assignments
        query = table.select().order_by(table.c.run, table.c.node)
        if run is not None:
            query = query.where(table.c.run == run)
        if node is not None:
            query = query.where(table.c.node == node)
        return self._rows(query)

    def update_assignment(self, run_id: int, node: str, **values: Any) -> None:
        """Set columns of `node`'s assignment to run `run_id`."""
        table = self.tables.assignments
        with self._transaction() as connection:
            connection.execute(
                table.update()
                .where((table.c.run == run_id) & (table.c.node == node))
                .values(**values)
            )
