"""Alembic's entry point: migrate the connection the coordinator hands over (never a URL of
its own), so upgrading roost upgrades an existing federation's database in place."""

from alembic import context

from roost.federation.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
