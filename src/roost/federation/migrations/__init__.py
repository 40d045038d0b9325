"""Alembic migrations of the coordinator's database; the coordinator applies them on start."""
