"""Fixtures of the store tests: a fresh database file, key and fake clock per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.store import Store, open_store


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path, key: DeviceKey, clock: FakeClock) -> Iterator[Store]:
    with open_store(db_path, key=key, clock=clock) as opened:
        yield opened
