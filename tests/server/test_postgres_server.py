"""The tests' private PostgreSQL: socket only, survives restarts, crashes and immediate stops,
clear if missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from device.errors import DeviceUnavailableError
from hardware_sim import postgres as pg
from hardware_sim.postgres import PostgresTestServer
from sync_server.db import make_engine, upgrade
from sync_server.ingest import acked_seq, store_batch
from tests.server.helpers import batch


def test_listens_on_its_socket_only(postgres: PostgresTestServer) -> None:
    engine = make_engine(postgres.create_database("socket_only"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW listen_addresses")).scalar() == ""
            assert conn.execute(text("SHOW port")).scalar() == str(postgres.port)
    finally:
        engine.dispose()
    assert list(postgres.socket_dir.glob(".s.PGSQL.*"))


def test_the_session_cluster_lives_in_memory_and_a_disk_one_does_not(
    postgres: PostgresTestServer,
) -> None:
    if not os.access(pg.SHM, os.W_OK):
        pytest.skip(f"{pg.SHM} is not writable here: the cluster is on disk")
    assert postgres.root.parent == pg.SHM
    on_disk = PostgresTestServer(memory=False)
    try:
        assert not on_disk.root.is_relative_to(pg.SHM)
    finally:
        on_disk.cleanup()


def test_committed_events_survive_a_crash_and_a_restart() -> None:
    server = PostgresTestServer(fsync=True, memory=False)  # on disk, where fsync means something
    try:
        server.start()
        url = server.create_database("crash")
        upgrade(url)
        engine = make_engine(url)
        assert store_batch(engine, batch("kiosk-01", range(1, 51))) == 50
        engine.dispose()
        server.kill()  # SIGKILL: crash recovery on the next start
        server.start()
        engine = make_engine(url)
        assert acked_seq(engine, "kiosk-01") == 50
        engine.dispose()
        server.stop()
        server.start()
        engine = make_engine(url)
        assert store_batch(engine, batch("kiosk-01", range(51, 53))) == 52
        engine.dispose()
        server.stop(immediate=True)  # no shutdown checkpoint: recovered from the WAL
        assert server.process is None and not server.running
        server.start()
        engine = make_engine(url)
        assert acked_seq(engine, "kiosk-01") == 52
        engine.dispose()
    finally:
        server.cleanup()
    assert not server.root.exists()


def test_missing_postgresql_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setattr(pg.shutil, "which", lambda _name: None)
    with pytest.raises(DeviceUnavailableError, match=r"apt-get install postgresql"):
        PostgresTestServer()


def test_database_names_are_checked(postgres: PostgresTestServer) -> None:
    with pytest.raises(ValueError, match="database name"):
        postgres.create_database('x"; DROP DATABASE postgres; --')
