"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from sync_server.db import (
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    open_database,
    upgrade,
)
from sync_server.errors import DatabaseConfigError, SchemaNotCurrentError
from sync_server.models import metadata

TABLES = {"devices", "events", "device_acks", "commands", "documents", "cases", "assignments"}


def test_upgrade_creates_the_schema_of_the_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_twice_changes_nothing(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = open_database(db_url)
    engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_unmigrated_database_is_refused_with_what_to_do(db_url: str) -> None:
    with pytest.raises(SchemaNotCurrentError, match=r"schema none.*migrate it first"):
        open_database(db_url)


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u@h/db", "not supported"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url", "not valid"),
    ],
)
def test_unsupported_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(DatabaseConfigError, match=problem):
        make_engine(url)


def test_plain_postgresql_url_uses_psycopg_3() -> None:
    engine = make_engine("postgresql://linli@db.example/linli")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()
