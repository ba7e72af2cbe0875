"""Fixtures of the ID-card tests: a SAM emulator on a pty and the real reader connected to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from device.idcard.reader import SamReader
from hardware_sim.sam import SamEmulator


@pytest.fixture
def emulator() -> Iterator[SamEmulator]:
    with SamEmulator(baudrate=115200) as emu:
        yield emu


@pytest.fixture
def reader(emulator: SamEmulator) -> Iterator[SamReader]:
    with SamReader(port=emulator.path, timeout_s=0.3, retries=1) as r:
        yield r


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` (real time) until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
