"""Engines and schema migrations of the server database: SQLite by default, PostgreSQL for a city.

``make_engine(url)`` gives an engine with the settings the storage code relies on; ``upgrade(url)``
applies the Alembic migrations shipped in ``sync_server/migrations`` (no ``alembic.ini`` needed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from sync_server.errors import DatabaseConfigError, SchemaNotCurrentError
from sync_server.models import metadata

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MIGRATIONS_DIR",
    "current_revision",
    "downgrade",
    "head_revision",
    "make_engine",
    "metadata",
    "open_database",
    "upgrade",
]

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///linli-server.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
SUPPORTED = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DatabaseConfigError(f"database URL is not valid; use {SUPPORTED}") from err
    if parsed.drivername in ("postgresql", "postgres"):
        # Plain postgresql:// means psycopg2 to SQLAlchemy; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise DatabaseConfigError(
            f"database backend {parsed.drivername!r} is not supported; use {SUPPORTED}"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseConfigError(
            "an in-memory SQLite database cannot be shared by server processes; "
            "give a file: sqlite:///var/lib/linli/server.db"
        )
    return parsed


def make_engine(url: str | URL = DEFAULT_DATABASE_URL, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite (WAL, foreign keys, BEGIN IMMEDIATE) or PostgreSQL (psycopg).

    SQLite transactions start with ``BEGIN IMMEDIATE`` so a writer takes the database lock up
    front and waits for it (busy timeout) instead of failing on a lock upgrade half way through.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transactions out of the sqlite3 module's hands: _sqlite_begin emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode except on power loss
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(url: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (every step and its record in one transaction)."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        log.info("migrating %s to %s", engine.url.render_as_string(hide_password=True), revision)
        command.upgrade(_config(engine), revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def downgrade(url: str | URL | Engine, revision: str) -> None:
    """Migrate back to ``revision`` (``"base"``: an empty database); for recovery and tests."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        log.warning("downgrading %s to %s", engine.url.render_as_string(True), revision)
        command.downgrade(_config(engine), revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def head_revision() -> str:
    """The newest migration shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def open_database(url: str | URL = DEFAULT_DATABASE_URL, **kwargs: Any) -> Engine:
    """An engine on a database already at the newest schema, or :class:`SchemaNotCurrentError`."""
    engine = make_engine(url, **kwargs)
    found, head = current_revision(engine), head_revision()
    if found != head:
        where = engine.url.render_as_string(hide_password=True)
        engine.dispose()
        raise SchemaNotCurrentError(
            f"database {where} is at schema {found or 'none'}, this server needs {head}; "
            "migrate it first (linli server migrate --db URL)"
        )
    return engine
