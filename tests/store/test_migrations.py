"""Migrations: fresh database, idempotent reopen, rollback of a failing one, newer DB refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from device.atrest import DeviceKey
from device.store import (
    MIGRATIONS,
    MigrationError,
    SchemaTooNewError,
    StoreClosedError,
    StoreError,
    open_store,
)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_fresh_database_gets_the_whole_schema(db_path: Path, key: DeviceKey) -> None:
    with open_store(db_path, key=key) as store:
        assert store.schema_version == MIGRATIONS.latest
        mode = store.db.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = store.db.conn.execute("PRAGMA synchronous").fetchone()[0]
        fks = store.db.conn.execute("PRAGMA foreign_keys").fetchone()[0]
    assert (mode, sync, fks) == ("wal", 2, 1)  # 2 = FULL
    assert {"meta", "outbox", "inbox", "doc_versions", "doc_items"} <= tables(db_path)


def test_reopen_is_idempotent(db_path: Path, key: DeviceKey) -> None:
    with open_store(db_path, key=key) as store, store.transaction() as tx:
        tx.emit("kiosk.started", {})
    with open_store(db_path, key=key) as store:
        assert store.schema_version == MIGRATIONS.latest
        assert [e.type for e in store.outbox.pending()] == ["kiosk.started"]
    assert user_version(db_path) == MIGRATIONS.latest


def test_failing_migration_rolls_back_and_names_itself(db_path: Path, key: DeviceKey) -> None:
    open_store(db_path, key=key).close()
    broken = MIGRATIONS.copy("broken")
    nxt = MIGRATIONS.latest + 1

    @broken(nxt)
    def add_lockers_then_fail(db: Database) -> None:
        db.execute("CREATE TABLE lockers (id INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO meta (key, value) VALUES ('half', 1)")
        raise RuntimeError("disk on fire")

    with pytest.raises(MigrationError) as info:
        open_store(db_path, key=key, migrations=broken)
    assert info.value.version == nxt
    assert "add_lockers_then_fail" in str(info.value)
    assert "disk on fire" in str(info.value)
    assert "lockers" not in tables(db_path)
    assert user_version(db_path) == MIGRATIONS.latest
    with open_store(db_path, key=key) as store:  # the old build still opens it
        assert store.meta("boot") == 2  # the failed open did not count a boot


def test_database_from_a_newer_build_is_refused(db_path: Path, key: DeviceKey) -> None:
    open_store(db_path, key=key).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {MIGRATIONS.latest + 3}")
    with pytest.raises(SchemaTooNewError, match="newer Linli") as info:
        open_store(db_path, key=key)
    assert info.value.found == MIGRATIONS.latest + 3


def test_migration_numbers_must_be_unique_and_contiguous() -> None:
    gappy = MIGRATIONS.copy("gappy")
    with pytest.raises(ValueError, match="already registered"):
        gappy(1)(lambda db: None)
    gappy(MIGRATIONS.latest + 2)(lambda db: None)
    with pytest.raises(StoreError, match="without gaps"):
        gappy.ordered()


def test_not_a_database_is_a_clear_error(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"cannot open the store .*junk\.db"):
        open_store(path, key=key)


def test_close_twice_and_use_after_close(db_path: Path, key: DeviceKey) -> None:
    store = open_store(db_path, key=key)
    store.close()
    store.close()
    with pytest.raises(StoreClosedError), store.transaction():
        pass
    with pytest.raises(StoreClosedError):
        store.outbox.pending()
