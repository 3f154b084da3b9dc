"""Alembic environment: runs on the connection ``Database.migrate`` hands in."""

from __future__ import annotations

from alembic import context

from zhongshu.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through zhongshu (Database.migrate), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
