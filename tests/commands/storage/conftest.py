"""The server storage tests of commands run on SQLite and on a private real PostgreSQL, like
tests/server (its fixtures, reused here, say why and what a missing PostgreSQL does)."""

from __future__ import annotations

from tests.server.conftest import backend, db_url, engine, migrated_url

__all__ = ["backend", "db_url", "engine", "migrated_url"]
