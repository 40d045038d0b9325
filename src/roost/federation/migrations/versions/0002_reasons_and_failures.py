"""A run keeps the one-line reason it ended (or a node refused it); a node counts its failures.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server_default fills the rows an older roost wrote, so an existing federation keeps them.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("message", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("failures")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("message")
