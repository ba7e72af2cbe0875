"""Every server storage test runs on SQLite and on a private, real PostgreSQL (hardware_sim).

A missing PostgreSQL FAILS the PostgreSQL half with what to install: the same tests on both
databases are the point (DESIGN.md section 4). Each test gets a database of its own, in the
session's one cluster (``postgres``, tests/conftest.py), copied from the migrated ``TEMPLATE``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from hardware_sim.postgres import PostgresTestServer
from sync_server.db import make_engine, upgrade

_names = itertools.count(1)
TEMPLATE = "linli_migrated"


def new_database(request: pytest.FixtureRequest, prefix: str, template: str | None = None) -> str:
    """A new database in the session's cluster, dropped when the requesting fixture ends (the
    cluster is in RAM, and a run creates hundreds)."""
    server: PostgresTestServer = request.getfixturevalue("postgres")
    name = f"{prefix}{next(_names)}"
    url = server.create_database(name, template=template)
    request.addfinalizer(lambda: server.drop_database(name))
    return url


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
    return new_database(request, "t")


@pytest.fixture
def migrated_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A new database at the newest schema."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
        upgrade(url)
        return url
    return new_database(request, "t", TEMPLATE)


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    eng = make_engine(migrated_url)
    yield eng
    eng.dispose()
