"""Migration 0004 builds exactly the ``applications`` and ``application_codes`` of the models, and
goes down to 0003 and back, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sync_server.db import current_revision, downgrade, head_revision, make_engine, upgrade
from sync_server.models import metadata
from tests.server.conftest import db_url  # noqa: F401

TABLES = {"applications", "application_codes"}


def test_0004_matches_the_models_and_goes_down_and_up(db_url: str) -> None:  # noqa: F811
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()  # 0004 and any later migration
        assert set(inspect(engine).get_table_names()) >= TABLES
        indexes = {i["name"] for i in inspect(engine).get_indexes("applications")}
        assert {"ix_applications_id_number", "ix_applications_community_status"} <= indexes
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        downgrade(engine, "0003")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
