"""The device's local store: one SQLite file (WAL) opened through sqlite-utils, migrated on open.

:class:`Store` owns the connection; every write goes through :meth:`Store.transaction`, which
holds SQLite's write lock from the start (``BEGIN IMMEDIATE``) and commits or rolls back as one
unit, so a state change and the event it causes (:meth:`Transaction.emit`) are stored together
or not at all. See docs/store.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlite_utils import Database

from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.store import outbox as _outbox
from device.store.documents import Documents
from device.store.errors import StoreBusyError, StoreClosedError, StoreError
from device.store.inbox import Inbox
from device.store.migrations import MIGRATIONS, Migrations, schema_version
from device.store.outbox import Event, Outbox

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a writer waits for another process's write lock before :class:`StoreBusyError`."""


class Transaction:
    """One open write transaction; valid only inside its ``with store.transaction()`` block."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._open = True

    @property
    def store(self) -> Store:
        return self._store

    @property
    def db(self) -> Database:
        """The sqlite-utils view of the connection, for table helpers inside this transaction."""
        self._check()
        return self._store.db

    @property
    def conn(self) -> sqlite3.Connection:
        self._check()
        return self._store.db.conn

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one SQL statement inside this transaction; returns the cursor."""
        self._check()
        try:
            return self._store.db.conn.execute(sql, parameters)
        except sqlite3.Error as err:
            statement = " ".join(sql.split())[:60]
            raise StoreError(f"store statement failed ({err}): {statement}") from err

    def emit(self, type: str, data: Mapping[str, Any], *, personal: bool = False) -> Event:
        """Queue an event in the outbox; it commits with (and only with) this transaction.

        ``personal=True`` when ``data`` holds personal data (names, ID numbers, addresses,
        phone numbers): it is then sealed at rest with the device key.
        """
        self._check()
        return _outbox.record_event(self, type, data, personal=personal)

    def _check(self) -> None:
        if not self._open:
            raise StoreError("this transaction has ended; open a new store.transaction()")


class Store:
    """The device store; a context manager. ``close()`` is safe twice."""

    def __init__(
        self,
        path: str | Path,
        *,
        key: DeviceKey,
        clock: Clock = SYSTEM_CLOCK,
        migrations: Migrations = MIGRATIONS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.key = key
        self.clock = clock
        self._lock = threading.RLock()
        self._tx: Transaction | None = None
        self._closed = False
        self.db = Database(_connect(self.path, busy_timeout))
        try:
            self.schema_version = migrations.apply(self.db)
            self.boot = self._next_boot()
        except BaseException:
            self.db.close()
            self._closed = True
            raise
        self.outbox = Outbox(self)
        self.inbox = Inbox(self)
        self.documents = Documents(self)
        log.info("store %s open: schema %d, boot %d", self.path, self.schema_version, self.boot)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"boot={self.boot}"
        return f"Store({str(self.path)!r}, {state})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls everything back and propagates.

        Transactions do not nest: inside one, pass its :class:`Transaction` along instead.
        """
        with self._lock:
            self._check_open()
            if self._tx is not None:
                raise StoreError(
                    "a store transaction is already open in this thread; pass its tx to the "
                    "code that needs it instead of opening another"
                )
            conn = self.db.conn
            _begin(conn)
            tx = Transaction(self)
            self._tx = tx
            try:
                yield tx
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                _commit(conn)
            finally:
                tx._open = False
                self._tx = None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads, serialised with this process's other users of the store."""
        with self._lock:
            self._check_open()
            yield self.db.conn

    @contextmanager
    def writing(self, tx: Transaction | None) -> Iterator[Transaction]:
        """Join ``tx`` when given, else run in a transaction of its own."""
        if tx is not None:
            if tx.store is not self or not tx._open:
                raise StoreError("the transaction passed in is not open on this store")
            yield tx
            return
        with self.transaction() as own:
            yield own

    def meta(self, key: str) -> int:
        with self.reading() as conn:
            return read_meta(conn, key)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed; open it again to use it")

    def _next_boot(self) -> int:
        conn = self.db.conn
        _begin(conn)
        try:
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'boot'")
            boot = read_meta(conn, "boot")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _commit(conn)
        return boot


def open_store(
    path: str | Path,
    *,
    key: DeviceKey,
    clock: Clock = SYSTEM_CLOCK,
    migrations: Migrations = MIGRATIONS,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> Store:
    """Open (creating and migrating if needed) the store at ``path``; counts one more boot."""
    return Store(path, key=key, clock=clock, migrations=migrations, busy_timeout=busy_timeout)


def read_meta(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"store meta value {key!r} is missing: the store is damaged")
    return int(row[0])


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        # isolation_level=None: the driver never opens transactions behind our back; every
        # write transaction is an explicit BEGIN IMMEDIATE (Store.transaction).
        conn = sqlite3.connect(
            str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the store {path}: {err}") from err
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {path} cannot use WAL mode (journal_mode is {mode})")
        # FULL: in WAL mode NORMAL may lose the last commits on a power cut. Those events may
        # already be published, so their seqs would be handed out again to other events and the
        # server (dedupe on (device, seq)) would drop the new ones. FULL fsyncs every commit.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        schema_version(conn)  # fails here, with the path, on a file that is not a database
    except sqlite3.Error as err:
        conn.close()
        raise StoreError(f"cannot open the store {path}: {err}") from err
    except BaseException:
        conn.close()
        raise
    return conn


def _begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise StoreBusyError(
                f"the store is locked by another process for too long ({err})"
            ) from err
        raise StoreError(f"cannot start a store transaction: {err}") from err


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"store commit failed, nothing was stored: {err}") from err
