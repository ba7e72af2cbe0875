"""One contract for every lock backend: what the locker may rely on, whichever wiring it has.

Each case runs on GPIO relays + reed sensors and on an RS485 "8A" board, in real time. The RS485
board is emulated behind a real pty driven by pyserial. The GPIO rig uses ``SimGpio`` in place
of RPi.GPIO: CI machines have no GPIO pins, and RPi.GPIO refuses to load anywhere but on a
Raspberry Pi, so the simulated module (held to RPi.GPIO's own API and errors) is the only way to
run the GPIO backend here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from device.clock import SYSTEM_CLOCK
from device.config import LocksSection
from device.errors import DeviceUnavailableError
from device.locks import DoorChange, DoorState, LockClosedError, LockController
from device.locks.factory import open_locks
from device.locks.gpio import GpioLockController
from device.locks.rs485 import Rs485LockController
from hardware_sim.gpio import SimGpio
from hardware_sim.lock_physics import LatchedError
from hardware_sim.lockboard import LockBoardBus

pytestmark = pytest.mark.timeout(60)

LOCKS = 4
PULSE_S = 0.08  # above the 50 ms a latch needs, short to keep the suite quick
RELEASE_S = 0.05


class LockWorld(Protocol):
    """The simulator face both rigs share (hardware_sim.gpio, hardware_sim.lockboard)."""

    def door_is_open(self, lock: int) -> bool: ...
    def open_door(self, lock: int) -> None: ...
    def force_open(self, lock: int) -> None: ...
    def close_door(self, lock: int) -> None: ...
    def jam(self, lock: int, jammed: bool = True) -> None: ...
    def pulses(self, lock: int) -> list[tuple[float, float]]: ...


@dataclass
class Rig:
    world: LockWorld
    locks: LockController

    def changes(self, want: int, timeout_s: float = 3.0) -> list[DoorChange]:
        """Poll as the locker loop does until ``want`` changes came (or the time is up)."""
        found: list[DoorChange] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < want and time.monotonic() < deadline:
            found += self.locks.poll()
            time.sleep(0.005)
        return found

    def settle(self) -> None:
        """Until every door has a trustworthy reading (debounce / start-up query)."""
        deadline = time.monotonic() + 3.0
        while DoorState.UNKNOWN in self.locks.doors().values():
            assert time.monotonic() < deadline, "doors never settled"
            self.locks.poll()
            time.sleep(0.005)


def _gpio_rig(_tmp: Path) -> Iterator[Rig]:
    section = LocksSection(
        backend="gpio",
        relay_pins=[17, 27, 22, 23],
        door_pins=[5, 6, 13, 19],
        pulse_ms=int(PULSE_S * 1000),
        debounce_ms=20,
    )
    sim = SimGpio.for_section(section, SYSTEM_CLOCK, release_s=RELEASE_S)
    sim.set_bounce(4, 0.01)
    with GpioLockController(section, gpio=sim, clock=SYSTEM_CLOCK) as locks:
        yield Rig(sim, locks)


def _rs485_rig(tmp: Path) -> Iterator[Rig]:
    link = tmp / "linli-locks"
    section = LocksSection(
        backend="rs485",
        port=str(link),
        boards=[1, 2],
        locks_per_board=LOCKS // 2,
        timeout_s=0.1,
        poll_interval_ms=50,
    )
    with (
        LockBoardBus.for_section(section, link=link, pulse_s=PULSE_S) as bus,
        Rs485LockController(section, clock=SYSTEM_CLOCK) as locks,
    ):
        assert isinstance(bus, LockBoardBus)
        yield Rig(bus, locks)


RIGS: dict[str, Callable[[Path], Iterator[Rig]]] = {"gpio": _gpio_rig, "rs485": _rs485_rig}


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    built = RIGS[request.param](tmp_path)
    made = next(built)
    made.settle()
    yield made
    built.close()


def test_doors_read_closed_once_settled_and_nothing_fired_at_start(rig: Rig) -> None:
    assert rig.locks.lock_count == LOCKS
    assert rig.locks.doors() == dict.fromkeys(range(1, LOCKS + 1), DoorState.CLOSED)
    assert all(rig.world.pulses(lock) == [] for lock in range(1, LOCKS + 1))


def test_a_pulse_opens_that_door_only_and_closing_it_is_reported(rig: Rig) -> None:
    rig.locks.pulse(3)
    (opened,) = rig.changes(1)
    assert (opened.lock, opened.state) == (3, DoorState.OPEN)
    assert rig.world.door_is_open(3) and not rig.world.door_is_open(2)
    ((start, end),) = rig.world.pulses(3)
    assert end - start >= RELEASE_S
    assert [rig.world.pulses(lock) for lock in (1, 2, 4)] == [[], [], []]

    rig.world.close_door(3)
    (closed,) = rig.changes(1)
    assert (closed.lock, closed.state) == (3, DoorState.CLOSED) and closed.at >= opened.at
    with pytest.raises(LatchedError):  # latched again: nobody pulls it open without a pulse
        rig.world.open_door(3)
    assert rig.changes(1, timeout_s=0.2) == []


def test_a_jammed_lock_is_pulsed_but_its_door_stays_closed(rig: Rig) -> None:
    rig.world.jam(2)
    rig.locks.pulse(2)
    assert rig.changes(1, timeout_s=0.5) == []
    assert len(rig.world.pulses(2)) == 1 and rig.locks.door(2) is DoorState.CLOSED


def test_a_door_forced_open_is_reported_without_any_pulse(rig: Rig) -> None:
    rig.world.force_open(4)
    (change,) = rig.changes(1)
    assert (change.lock, change.state) == (4, DoorState.OPEN)
    assert rig.world.pulses(4) == []


@pytest.mark.parametrize("lock", [0, LOCKS + 1, -1, True])
def test_lock_numbers_outside_the_range_are_refused(rig: Rig, lock: int) -> None:
    with pytest.raises(ValueError, match=f"locks are numbered 1..{LOCKS}"):
        rig.locks.pulse(lock)
    with pytest.raises(ValueError):
        rig.locks.door(lock)
    assert all(rig.world.pulses(n) == [] for n in range(1, LOCKS + 1))


def test_close_is_safe_twice_and_use_after_close_is_refused(rig: Rig) -> None:
    rig.locks.close()
    rig.locks.close()
    with pytest.raises(LockClosedError):
        rig.locks.pulse(1)
    with pytest.raises(LockClosedError):
        rig.locks.poll()
    assert rig.world.pulses(1) == []


def test_the_factory_builds_what_the_config_names(tmp_path: Path) -> None:
    assert open_locks(LocksSection()) is None  # backend "none": a kiosk
    link = tmp_path / "linli-locks"
    section = LocksSection(backend="rs485", port=str(link), locks_per_board=2, timeout_s=0.1)
    with LockBoardBus.for_section(section, link=link, pulse_s=PULSE_S):
        locks = open_locks(section)
        assert isinstance(locks, Rs485LockController) and locks.lock_count == 2
        locks.close()
    gpio = LocksSection(backend="gpio", relay_pins=[17], door_pins=[5])
    try:
        import RPi.GPIO  # type: ignore[import-not-found]  # noqa: F401
    except (ImportError, RuntimeError):
        # Not a Pi (or RPi.GPIO not installed): the technician gets what to do, not a traceback.
        with pytest.raises(DeviceUnavailableError, match=r"RPi\.GPIO"):
            open_locks(gpio)
    else:  # pragma: no cover - only on a real Raspberry Pi
        pytest.skip("RPi.GPIO loads here: this is a Pi, and opening it would drive real pins")
