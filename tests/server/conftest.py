"""Every server storage test runs on SQLite and on a private, real PostgreSQL (hardware_sim).

A missing PostgreSQL FAILS the PostgreSQL half with what to install: the same tests on both
databases are the point (DESIGN.md section 4). Each test gets a database of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from device.errors import DeviceUnavailableError
from hardware_sim.postgres import PostgresTestServer
from sync_server.db import make_engine, upgrade

_names = itertools.count(1)
TEMPLATE = "linli_migrated"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresTestServer]:
    try:
        server = PostgresTestServer()
    except DeviceUnavailableError as err:
        pytest.fail(f"{err}", pytrace=False)
    try:
        server.start()
        # A migrated template: CREATE DATABASE ... TEMPLATE copies it in milliseconds.
        upgrade(server.create_database(TEMPLATE))
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A new, empty database on the test's backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
    server: PostgresTestServer = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_names)}")


@pytest.fixture
def migrated_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A new database at the newest schema."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
        upgrade(url)
        return url
    server: PostgresTestServer = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_names)}", template=TEMPLATE)


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    eng = make_engine(migrated_url)
    yield eng
    eng.dispose()
