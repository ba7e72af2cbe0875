"""Alembic environment: runs on the engine that ``sync_server.db.upgrade`` hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from sync_server.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        raise RuntimeError("run migrations through sync_server.db.upgrade(url)")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite can run DDL in a transaction too: a failed step leaves nothing behind.
            transactional_ddl=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use upgrade(url)")
run_migrations_online()
