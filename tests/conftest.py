"""Test-wide settings and shared fixtures.

Hypothesis profiles are derandomised in CI so a red run can be reproduced. ``cupsd`` is a private,
real cupsd (hardware_sim.cups) shared by the A4 and kiosk tests; a missing cupsd FAILS them with
what to install: they are the only proof the drivers work through the real daemon.

``postgres`` is the one private PostgreSQL of the session, for every directory's server-storage
tests. It is defined here once: the same fixture function imported into several conftests is a
separate session fixture in each, and each started (and at the end stopped) a cluster of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from device.atrest import DeviceKey
from device.errors import DeviceUnavailableError
from hardware_sim.cups import INSTALL_HINT, CupsTestServer, SimQueue
from hardware_sim.postgres import PostgresTestServer

settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresTestServer]:
    """A missing PostgreSQL FAILS the PostgreSQL half of the storage tests with what to install."""
    from sync_server.db import upgrade
    from tests.server.conftest import TEMPLATE

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


@pytest.fixture(scope="session")
def cupsd() -> Iterator[CupsTestServer]:
    if shutil.which("cupsd") is None and not Path("/usr/sbin/cupsd").exists():
        pytest.fail(f"cupsd is not installed; {INSTALL_HINT}", pytrace=False)
    # Not under pytest's 0700 tmp tree: CUPS filters run as user lp and must reach the spool.
    server = CupsTestServer()
    server.start()
    yield server
    server.stop()
    server.remove_pdf_configs()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def queue(cupsd: CupsTestServer, request: pytest.FixtureRequest) -> Iterator[SimQueue]:
    """A fresh sim queue per test (no state leaks between tests)."""
    if cupsd.process is None or cupsd.process.poll() is not None:
        cupsd.start()
    name = "sim" + str(abs(hash(request.node.nodeid)) % 10**8)
    sim = cupsd.add_sim_queue(name)
    yield sim
    if cupsd.process is None or cupsd.process.poll() is not None:
        cupsd.start()
    sim.set_mode("ok")
    cupsd.cancel_all(name)


@pytest.fixture
def device_key() -> DeviceKey:
    """The at-rest key of the test's kiosk (a fresh one per test)."""
    return DeviceKey.generate()
