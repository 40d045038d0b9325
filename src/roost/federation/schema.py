"""The coordinator's tables, as SQLAlchemy Core metadata (the head of the migrations).

Alembic's migrations (`roost/federation/migrations/versions/`) create and change these tables;
this module is what the code reads and writes. A change here needs a migration beside it.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

people = Table(
    "people",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("operator", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("public_key", Text, nullable=False),
    Column("registered", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
    Column("capacity", Integer, nullable=False, default=0),
    Column("runs_served", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
)

challenges = Table(
    "challenges",
    metadata,
    Column("challenge_sha256", String(64), primary_key=True),
    Column("node", String(200), nullable=False),
    Column("expires", Float, nullable=False),
)

node_sessions = Table(
    "node_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("node", String(200), nullable=False),
    Column("expires", Float, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(200), nullable=False),
    Column("federation", String(200), nullable=False),
    Column("project", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("bundle_sha256", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=True),
    Column("publisher_key", Text, nullable=True),
    Column("run_config", Text, nullable=False, default="[]"),
    Column("wanted_nodes", Integer, nullable=True),
    Column("port", Integer, nullable=True),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
    Column("started", Float, nullable=True),
    Column("finished", Float, nullable=True),
)

assignments = Table(
    "assignments",
    metadata,
    Column("run", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("node", String(200), primary_key=True),
    Column("token", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", Text, nullable=False, default=""),
)
