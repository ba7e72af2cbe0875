"""Schema migrations of the device store, as registered functions (the sqlite-utils idiom).

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the bump of the
schema version (``PRAGMA user_version``, which SQLite writes transactionally), so a failing
migration leaves no half-built schema and no version claiming it ran. Versions are numbered
1, 2, 3... with no gaps; a database whose version is higher than this build knows is refused.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from device.store.errors import MigrationError, SchemaTooNewError, StoreBusyError, StoreError

log = logging.getLogger(__name__)

MigrationFn = Callable[[Database], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    fn: MigrationFn


class Migrations:
    """An ordered set of migrations; ``@migrations(1)`` registers a function as version 1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._by_version: dict[int, Migration] = {}

    def __call__(self, version: int) -> Callable[[MigrationFn], MigrationFn]:
        def register(fn: MigrationFn) -> MigrationFn:
            if version < 1:
                raise ValueError(f"migration versions start at 1, got {version} for {fn.__name__}")
            if version in self._by_version:
                raise ValueError(
                    f"migration {version} is already registered in {self.name!r} "
                    f"({self._by_version[version].name}); {fn.__name__} needs another number"
                )
            self._by_version[version] = Migration(version, fn.__name__, fn)
            return fn

        return register

    def copy(self, name: str) -> Migrations:
        """A new set holding the same migrations (tests extend it without touching this one)."""
        other = Migrations(name)
        other._by_version = dict(self._by_version)
        return other

    @property
    def latest(self) -> int:
        return max(self._by_version, default=0)

    def ordered(self) -> list[Migration]:
        versions = sorted(self._by_version)
        if versions != list(range(1, len(versions) + 1)):
            raise StoreError(
                f"migrations of {self.name!r} must be numbered 1..n without gaps, got {versions}"
            )
        return [self._by_version[v] for v in versions]

    def apply(self, db: Database) -> int:
        """Bring ``db`` to the latest version; returns the version it is at afterwards."""
        ordered = self.ordered()
        current = schema_version(db.conn)
        if current > self.latest:
            raise SchemaTooNewError(
                f"the store has schema version {current} but this build knows only up to "
                f"{self.latest}: it was written by a newer Linli; install that version again "
                "(downgrades are not supported)",
                found=current,
                supported=self.latest,
            )
        for migration in ordered[current:]:
            _apply_one(db, migration)
        return schema_version(db.conn)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _apply_one(db: Database, migration: Migration) -> None:
    conn = db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        raise StoreBusyError(f"cannot lock the store to migrate it: {err}") from err
    try:
        # Another process may have migrated while we waited for the lock.
        if schema_version(conn) >= migration.version:
            conn.execute("COMMIT")
            return
        migration.fn(db)
        conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        conn.execute("COMMIT")
    except BaseException as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if not isinstance(err, Exception):
            raise
        raise MigrationError(
            f"store migration {migration.version} ({migration.name}) failed and was rolled "
            f"back, the store stays at version {migration.version - 1}: {err}",
            version=migration.version,
            name=migration.name,
        ) from err
    log.info("store migrated to version %d (%s)", migration.version, migration.name)


MIGRATIONS = Migrations("linli-device")
migration = MIGRATIONS


@migration(1)
def create_base_schema(db: Database) -> None:
    """meta counters, the outbox, the command inbox, and the versioned document cache."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('acked_seq', 0), ('boot', 0)"
    )
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            at REAL NOT NULL,
            boot INTEGER NOT NULL,
            sealed INTEGER NOT NULL CHECK (sealed IN (0, 1)),
            data BLOB NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE inbox (
            cmd_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            outcome TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX inbox_expires_at ON inbox (expires_at)")
    db.execute(
        """CREATE TABLE doc_versions (
            doc TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE doc_items (
            doc TEXT NOT NULL REFERENCES doc_versions (doc) ON DELETE CASCADE,
            key TEXT NOT NULL,
            sealed INTEGER NOT NULL CHECK (sealed IN (0, 1)),
            body BLOB NOT NULL,
            PRIMARY KEY (doc, key)
        ) WITHOUT ROWID"""
    )


@migration(2)
def outbox_wire_text(db: Database) -> None:
    """Each new event's ``up/events`` JSON text, kept from ``emit`` (NULL for sealed events and
    for those queued before): a run of them is read as one string in one SQLite step."""
    db.table("outbox").add_column("wire", str)


@migration(3)
def locker_tables(db: Database) -> None:
    """The locker's compartments, its journal of open requests and the credentials it has used
    (docs/locker.md). Empty on a kiosk."""
    db.execute(
        """CREATE TABLE compartments (
            number INTEGER PRIMARY KEY,
            size TEXT NOT NULL CHECK (size IN ('S', 'M', 'L')),
            state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'open_for_deposit',
                'holding', 'open_for_pickup', 'fault', 'disabled')),
            case_id TEXT,
            content TEXT CHECK (content IN ('documents', 'result')),
            since REAL NOT NULL,
            resume_state TEXT,
            fault TEXT,
            door TEXT NOT NULL DEFAULT 'unknown'
        )"""
    )
    db.execute(
        """CREATE TABLE locker_intents (
            id INTEGER PRIMARY KEY,
            compartment INTEGER NOT NULL REFERENCES compartments (number),
            flow TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'pulsed', 'opened', 'done',
                'failed', 'abandoned')),
            attempts INTEGER NOT NULL DEFAULT 0,
            pulsed_at REAL
        )"""
    )
    # At most one open request per compartment is in progress: a second is refused, not queued.
    db.execute(
        "CREATE UNIQUE INDEX locker_intents_active ON locker_intents (compartment) "
        "WHERE status IN ('pending', 'pulsed', 'opened')"
    )
    db.execute(
        """CREATE TABLE used_credentials (
            cti TEXT PRIMARY KEY,
            used_at REAL NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE scanner_lockout (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            failures INTEGER NOT NULL,
            level INTEGER NOT NULL,
            until REAL NOT NULL,
            ignored INTEGER NOT NULL
        )"""
    )
    db.execute("INSERT INTO scanner_lockout VALUES (1, 0, 0, 0, 0)")
