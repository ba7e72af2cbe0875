"""The real Rs485LockController (pyserial) against emulated 8A boards on a pty, paced at 9600 baud.

Polling is driven by a FakeClock; only the boards' own pulse timers run in real time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from device.clock import FakeClock
from device.config import LocksSection
from device.errors import DeviceUnavailableError
from device.locks import LockPortUnavailableError
from device.locks.base import (
    DoorChange,
    DoorState,
    DuplicateAddressError,
    LockBusError,
    LockClosedError,
    LockTimeoutError,
)
from device.locks.rs485 import Rs485LockController
from hardware_sim.lock_physics import LatchedError
from hardware_sim.lockboard import LockBoardBus

pytestmark = pytest.mark.timeout(30)

PULSE_S = 0.08  # the emulated boards' pulse: above the 50 ms release, short to keep tests quick
INTERVAL_S = 0.2
CLOSED, OPEN, UNKNOWN = DoorState.CLOSED, DoorState.OPEN, DoorState.UNKNOWN

Rig = tuple[LockBoardBus, Rs485LockController, FakeClock]


def section(port: Path | str, boards: list[int], per_board: int) -> LocksSection:
    return LocksSection.model_validate(
        {
            "backend": "rs485",
            "port": str(port),
            "boards": boards,
            "locks_per_board": per_board,
            "timeout_s": 0.1,
            "poll_interval_ms": int(INTERVAL_S * 1000),
        }
    )


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "linli-locks"


@contextmanager
def bus_on(
    link: Path, boards: list[int], per_board: int, reports: bool = True
) -> Iterator[LockBoardBus]:
    config = section(link, boards, per_board)
    with LockBoardBus.for_section(config, link=link, pulse_s=PULSE_S, reports=reports) as bus:
        assert isinstance(bus, LockBoardBus)
        yield bus


@contextmanager
def rig(
    link: Path, boards: list[int] | None = None, per_board: int = 8, reports: bool = True
) -> Iterator[Rig]:
    boards = boards or [1]
    clock = FakeClock()
    with (
        bus_on(link, boards, per_board, reports) as bus,
        Rs485LockController(section(link, boards, per_board), clock=clock) as ctl,
    ):
        assert isinstance(ctl, Rs485LockController)
        # The first poll hands over the readings of the start-up query.
        assert {c.lock for c in ctl.poll()} == set(range(1, ctl.lock_count + 1))
        bus.clear_transcript()
        yield bus, ctl, clock


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for the emulated boards' real-time pulse timers."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the emulated board did not get there in time"
        time.sleep(0.005)


def poll_until(ctl: Rs485LockController, want: int, timeout: float = 2.0) -> list[DoorChange]:
    """Poll (without moving the clock) until ``want`` changes came, as the locker loop would."""
    changes: list[DoorChange] = []
    deadline = time.monotonic() + timeout
    while len(changes) < want and time.monotonic() < deadline:
        changes += ctl.poll()
        time.sleep(0.005)
    return changes


def test_pulse_opens_the_lock_and_the_board_reports_the_door(link: Path) -> None:
    with rig(link) as (bus, ctl, clock):
        ctl.pulse(3)
        assert bus.transcript_text().startswith("> 8A 01 03 11 99\n< 8A 01 03 11 99\n")
        wait_until(lambda: bus.door_is_open(3))
        assert poll_until(ctl, 1) == [DoorChange(3, OPEN, clock.monotonic())]
        assert ctl.door(3) is OPEN
        (start, end), *more = bus.pulses(3)
        assert not more and end - start >= PULSE_S - 0.005
        assert "80 01 00 33" not in bus.transcript_text()  # the report, not a query, told us
        bus.close_door(3)
        assert poll_until(ctl, 1) == [DoorChange(3, CLOSED, clock.monotonic())]
        assert [bus.door_is_open(n) for n in range(1, 9)] == [False] * 8


def test_with_reports_off_the_periodic_query_finds_the_change(link: Path) -> None:
    with rig(link, reports=False) as (bus, ctl, clock):
        ctl.pulse(2)
        wait_until(lambda: bus.door_is_open(2))
        time.sleep(0.05)
        assert ctl.poll() == []  # no report, and the next query is not due yet
        clock.advance(INTERVAL_S)
        assert ctl.poll() == [DoorChange(2, OPEN, clock.monotonic())]
        bus.close_door(2)
        assert ctl.poll() == []
        clock.advance(INTERVAL_S)
        assert ctl.poll() == [DoorChange(2, CLOSED, clock.monotonic())]


def test_a_forced_door_is_reported_open(link: Path) -> None:
    with rig(link) as (bus, ctl, clock):
        bus.force_open(5)
        assert poll_until(ctl, 1) == [DoorChange(5, OPEN, clock.monotonic())]
        bus.close_door(5)
        assert poll_until(ctl, 1) == [DoorChange(5, CLOSED, clock.monotonic())]


def test_locks_are_numbered_across_boards_in_config_order(link: Path) -> None:
    with rig(link, boards=[7, 3], per_board=4) as (bus, ctl, clock):
        assert ctl.lock_count == 8
        assert ctl.address_of(6) == (3, 2)
        ctl.pulse(6)
        assert bus.transcript_text().startswith("> 8A 03 02 11 9A\n")
        wait_until(lambda: bus.door_is_open(6))
        assert [n for n in range(1, 9) if bus.door_is_open(n)] == [6]
        assert poll_until(ctl, 1) == [DoorChange(6, OPEN, clock.monotonic())]
        for bad in (0, 9):
            with pytest.raises(ValueError, match=r"1\.\.8"):
                ctl.pulse(bad)


def test_a_mute_board_times_out_turns_unknown_then_comes_back(
    link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with rig(link, boards=[1, 2], per_board=4) as (bus, ctl, clock):
        bus.mute(2)
        with pytest.raises(LockTimeoutError, match=r"board 2 .*lock 6 \(channel 2\)"):
            ctl.pulse(6)
        assert bus.transcript_text().count("8A 02 02 11 9B") == 2  # sent, then retried once
        assert not bus.door_is_open(6)
        with caplog.at_level(logging.INFO, logger="device.locks.rs485"):
            clock.advance(INTERVAL_S)
            assert ctl.poll() == [DoorChange(n, UNKNOWN, clock.monotonic()) for n in (5, 6, 7, 8)]
            clock.advance(INTERVAL_S)
            assert ctl.poll() == []
            assert "board 2" in ctl.faults()[2] and list(ctl.faults()) == [2]
            ctl.pulse(1)  # the other board's locks still open
            wait_until(lambda: bus.door_is_open(1))
            bus.mute(2, muted=False)
            clock.advance(INTERVAL_S)
            changes = poll_until(ctl, 5)
            clock.advance(INTERVAL_S)
            changes += ctl.poll()
        assert sorted(changes, key=lambda c: c.lock) == [
            DoorChange(1, OPEN, clock.monotonic() - INTERVAL_S),
            *(DoorChange(n, CLOSED, clock.monotonic() - INTERVAL_S) for n in (5, 6, 7, 8)),
        ]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "board 2" in warnings[0].getMessage()
        assert caplog.text.count("answers again") == 1
        assert ctl.faults() == {}


def test_a_board_mute_at_start_does_not_stop_the_others(
    link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with bus_on(link, [1, 2], 4) as bus:
        bus.mute(2)
        with (
            caplog.at_level(logging.WARNING, logger="device.locks.rs485"),
            Rs485LockController(section(link, [1, 2], 4), clock=clock) as ctl,
        ):
            assert "lock board 2" in caplog.text and "does not answer" in caplog.text
            assert [c.lock for c in ctl.poll()] == [1, 2, 3, 4]
            assert ctl.doors() == {1: CLOSED, 2: CLOSED, 3: CLOSED, 4: CLOSED} | dict.fromkeys(
                (5, 6, 7, 8), UNKNOWN
            )
            ctl.pulse(2)
            wait_until(lambda: bus.door_is_open(2))


@pytest.mark.parametrize("garbled", [False, True], ids=["two-replies", "collision"])
def test_two_boards_on_one_address_are_refused_at_start(link: Path, garbled: bool) -> None:
    with bus_on(link, [1, 4], 8) as bus:
        bus.duplicate(4, garbled=garbled)
        with pytest.raises(DuplicateAddressError) as caught:
            Rs485LockController(section(link, [1, 4], 8), clock=FakeClock())
    message = str(caught.value)
    assert "address 4" in message and "address switches apart" in message
    assert isinstance(caught.value, LockBusError)


def test_a_duplicate_address_during_operation_is_logged_once_and_listed(
    link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with rig(link, boards=[1, 2], per_board=4) as (bus, ctl, clock):
        bus.duplicate(2)
        with caplog.at_level(logging.ERROR, logger="device.locks.rs485"):
            for _ in range(3):
                clock.advance(INTERVAL_S)
                assert ctl.poll() == []
            ctl.pulse(6)  # the command still got through (to both boards, alas)
        assert len(caplog.records) == 1 and "address 2" in caplog.text
        assert "address switches apart" in ctl.faults()[2]
        wait_until(lambda: bus.door_is_open(6))


def test_colliding_answers_during_operation_are_a_bus_error_not_a_timeout(link: Path) -> None:
    with rig(link, boards=[1, 2], per_board=4) as (bus, ctl, clock):
        bus.duplicate(1, garbled=True)
        with pytest.raises(LockBusError, match="garbled") as caught:
            ctl.pulse(3)
        assert not isinstance(caught.value, LockTimeoutError)
        assert "board 1" in str(caught.value) and "address 1" in str(caught.value)
        wait_until(lambda: bus.door_is_open(3))  # the board obeyed: only the answers collided
        clock.advance(INTERVAL_S)
        changes = poll_until(ctl, 5)
        assert [c.lock for c in changes if c.state is UNKNOWN] == [1, 2, 3, 4]
        assert [ctl.door(n) for n in (1, 2, 3, 4, 5)] == [UNKNOWN] * 4 + [CLOSED]
        assert "collide" in ctl.faults()[1]
        assert ctl.noise_bytes > 0


def test_noise_on_the_bus_does_not_lose_the_next_answer(link: Path) -> None:
    with rig(link) as (bus, ctl, clock):
        bus.send_garbage(40, seed=1)  # arrives between requests
        ctl.pulse(1)
        bus.send_garbage(12, seed=2, before_next_reply=True)  # glued in front of the echo
        ctl.pulse(2)
        assert bus.transcript_text().count("> 8A") == 2  # each answered first time
        wait_until(lambda: bus.door_is_open(1) and bus.door_is_open(2))
        bus.send_garbage(9, seed=3, before_next_reply=True)  # in front of a query answer
        clock.advance(INTERVAL_S)
        changes = poll_until(ctl, 2)
        assert sorted(c.lock for c in changes) == [1, 2]
        assert {c.state for c in changes} == {OPEN}
        assert ctl.faults() == {}


def test_a_jammed_lock_pulses_but_the_door_stays_shut(link: Path) -> None:
    with rig(link) as (bus, ctl, clock):
        bus.jam(2)
        ctl.pulse(2)
        wait_until(lambda: len(bus.pulses(2)) == 1)
        assert not bus.door_is_open(2)
        with pytest.raises(LatchedError):
            bus.open_door(2)
        clock.advance(INTERVAL_S)
        assert ctl.poll() == []
        assert ctl.door(2) is CLOSED
        bus.jam(2, jammed=False)
        ctl.pulse(2)
        wait_until(lambda: bus.door_is_open(2))


def test_close_is_safe_twice_and_use_after_close_is_refused(link: Path) -> None:
    with rig(link) as (_bus, ctl, _clock):
        ctl.close()
        ctl.close()
        for use in (lambda: ctl.pulse(1), ctl.poll, lambda: ctl.door(1)):
            with pytest.raises(LockClosedError, match="closed"):
                use()


def test_a_missing_port_names_the_port_and_the_config_key(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB-gone"
    with pytest.raises(LockPortUnavailableError) as caught:
        Rs485LockController(section(missing, [1], 8), clock=FakeClock())
    assert str(missing) in str(caught.value) and "locks.port" in str(caught.value)
    assert isinstance(caught.value, DeviceUnavailableError | LockBusError)
