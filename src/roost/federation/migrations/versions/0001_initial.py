"""The first schema: people, nodes, node challenges and sessions, runs and their assignments.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("operator", sa.Boolean, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("registered", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("runs_served", sa.Integer, nullable=False),
    )
    op.create_table(
        "challenges",
        sa.Column("challenge_sha256", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "node_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("federation", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=True),
        sa.Column("publisher_key", sa.Text, nullable=True),
        sa.Column("run_config", sa.Text, nullable=False),
        sa.Column("wanted_nodes", sa.Integer, nullable=True),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float, nullable=True),
        sa.Column("finished", sa.Float, nullable=True),
    )
    op.create_table(
        "assignments",
        sa.Column("run", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("token", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("assignments", "runs", "node_sessions", "challenges", "nodes", "people"):
        op.drop_table(table)
