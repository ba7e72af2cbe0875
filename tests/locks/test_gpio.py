"""GPIO lock backend through ``hardware_sim.gpio.SimGpio`` and a FakeClock.

Why a stand-in for RPi.GPIO: CI machines have no GPIO pins, and RPi.GPIO refuses to load (or to set
up a pin) anywhere but on a Raspberry Pi. SimGpio is not a mock: it has RPi.GPIO's module surface,
raises RPi.GPIO's errors on misuse (tested below), and simulates what is wired behind the pins -
relays, solenoids with a release time and a heat limit, doors with kicker springs, bouncing reed
switches - so the tests assert what a technician would measure: relay levels over time, door
states, and error messages.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import itertools
import random
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence

import pytest

from device.clock import FakeClock
from device.config import LocksSection
from device.errors import DeviceUnavailableError
from device.locks.base import DoorChange, DoorState, LockClosedError, LockConfigError
from device.locks.gpio import GpioError, GpioLockController, GpioModule
from hardware_sim.gpio import SimGpio
from hardware_sim.lock_physics import LatchedError

RELAYS = [17, 27, 22]
DOORS = [5, 6, 13]


def make_section(**overrides: object) -> LocksSection:
    values: dict[str, object] = {
        "backend": "gpio",
        "relay_pins": RELAYS,
        "door_pins": DOORS,
        "pulse_ms": 200,
        "debounce_ms": 30,
    }
    values.update(overrides)
    return LocksSection.model_validate(values)


class Rig:
    """A controller, the simulated pins behind it and the clock they share."""

    def __init__(self, seed: int = 0, **overrides: object) -> None:
        self.section = make_section(**overrides)
        self.clock = FakeClock()
        self.sim = SimGpio.for_section(self.section, self.clock, rng=random.Random(seed))
        gpio: GpioModule = self.sim  # SimGpio must satisfy the module protocol (mypy checks this)
        self.locks = GpioLockController(self.section, gpio=gpio, clock=self.clock)

    def run(self, seconds: float, step: float = 0.001) -> list[DoorChange]:
        """Poll every ``step`` for ``seconds`` of fake time; return the changes reported."""
        changes: list[DoorChange] = []
        for _ in range(round(seconds / step)):
            changes += self.locks.poll()
            self.clock.advance(step)
        return changes

    def settled(self) -> Rig:
        changes = self.run(0.05)
        assert [(c.lock, c.state) for c in changes] == [(n, DoorState.CLOSED) for n in (1, 2, 3)]
        return self


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig().settled()
    yield rig
    rig.locks.close()


def level_name(level: int) -> str:
    return "HIGH" if level else "LOW"


# -- safe state first ------------------------------------------------------------------------------
@pytest.mark.parametrize("active_low", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_every_relay_is_forced_off_before_anything_else(active_low: bool, seed: int) -> None:
    rig = Rig(seed=seed, relay_active_low=active_low)
    off = SimGpio.HIGH if active_low else SimGpio.LOW
    t0 = rig.clock.monotonic()
    # RPi.GPIO needs the numbering mode first; then every relay, at its off level, before any
    # other call (a door input, a warning setting) touches the hardware.
    assert rig.sim.calls[0] == "setmode(BCM)"
    assert rig.sim.calls[1 : 1 + len(RELAYS)] == [
        f"setup({pin}, OUT, initial={level_name(off)})" for pin in RELAYS
    ]
    for lock, pin in enumerate(RELAYS, start=1):
        assert rig.sim.history(pin) == [(t0, off)]
        assert rig.sim.pulses(lock) == []
        assert not rig.sim.door_is_open(lock)
    assert rig.sim.peak_coils == 0


def test_the_simulated_pins_would_catch_a_backend_that_skips_initial() -> None:
    """The sim's random power-up latch is what makes the test above meaningful: a plain
    ``setup(pin, OUT)`` drives whatever the latch held, and here that energises a coil."""
    sim = SimGpio(RELAYS, DOORS, clock=FakeClock(), rng=random.Random(0))
    sim.setmode(sim.BCM)
    sim.setup(RELAYS, sim.OUT)
    assert sim.peak_coils >= 1


@pytest.mark.parametrize(("closed_level", "pull"), [("low", "PUD_UP"), ("high", "PUD_DOWN")])
def test_door_inputs_get_the_pull_that_matches_the_reed_wiring(
    closed_level: str, pull: str
) -> None:
    rig = Rig(door_closed_level=closed_level)
    assert [c for c in rig.sim.calls if c.startswith("setup") and "IN" in c] == [
        f"setup({pin}, IN, pull_up_down={pull})" for pin in DOORS
    ]
    rig.settled()
    opened_at = rig.clock.monotonic()
    rig.sim.force_open(3)
    [change] = rig.run(0.05)
    assert (change.lock, change.state) == (3, DoorState.OPEN)
    assert change.at == pytest.approx(opened_at + 0.030, abs=0.002)


def test_doors_are_unknown_until_their_reading_has_held_for_the_debounce_time() -> None:
    rig = Rig()
    assert rig.locks.doors() == {1: DoorState.UNKNOWN, 2: DoorState.UNKNOWN, 3: DoorState.UNKNOWN}
    assert rig.run(0.029) == []
    assert rig.locks.door(1) is DoorState.UNKNOWN
    changes = rig.run(0.01)
    assert [(c.lock, c.state) for c in changes] == [(n, DoorState.CLOSED) for n in (1, 2, 3)]
    assert rig.run(0.1) == []


# -- pulses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pulse_ms", [50, 200, 750])
def test_the_relay_is_energised_for_exactly_pulse_ms(pulse_ms: int) -> None:
    rig = Rig(pulse_ms=pulse_ms)
    rig.locks.pulse(2)
    (t0, off), (t_on, on), (t_off, off_again) = rig.sim.history(RELAYS[1])
    assert (off, on, off_again) == (SimGpio.HIGH, SimGpio.LOW, SimGpio.HIGH)  # active-low board
    assert t_off - t_on == pytest.approx(pulse_ms / 1000)
    assert rig.sim.pulses(2) == [(t_on, t_off)]
    assert not rig.sim.overheated(2)
    assert rig.sim.history(RELAYS[0]) == [(t0, SimGpio.HIGH)]  # neighbours untouched


def test_a_pulse_pops_the_door_open_and_the_change_is_reported_once_despite_bounce() -> None:
    rig = Rig(seed=3)
    rig.sim.set_bounce(toggles=7, window_s=0.02)
    rig.settled()
    rig.locks.pulse(1)
    pulse_end = rig.sim.pulses(1)[0][1]
    assert rig.sim.door_is_open(1)

    raw_levels, changes = [], []
    for _ in range(100):
        raw_levels.append(rig.sim.input(DOORS[0]))
        changes += rig.locks.poll()
        rig.clock.advance(0.001)
    flips = sum(a != b for a, b in itertools.pairwise(raw_levels))
    assert flips >= 3, "the reed should have chattered for this test to mean anything"

    assert [(c.lock, c.state) for c in changes] == [(1, DoorState.OPEN)]
    assert pulse_end + 0.030 <= changes[0].at <= pulse_end + 0.020 + 0.030 + 0.002
    assert rig.locks.door(1) is DoorState.OPEN

    rig.sim.close_door(1)
    assert [(c.lock, c.state) for c in rig.run(0.1)] == [(1, DoorState.CLOSED)]
    with pytest.raises(LatchedError, match="lock 1 is latched"):
        rig.sim.open_door(1)


def test_a_jammed_lock_fires_its_relay_but_the_door_stays_shut(rig: Rig) -> None:
    rig.sim.jam(2)
    rig.locks.pulse(2)
    assert len(rig.sim.pulses(2)) == 1  # the relay did its part
    assert not rig.sim.door_is_open(2)
    with pytest.raises(LatchedError, match="lock 2 is jammed"):
        rig.sim.open_door(2)
    # What the daemon sees: no OPEN change after the pulse; the door stays CLOSED.
    assert rig.run(0.2) == []
    assert rig.locks.door(2) is DoorState.CLOSED


@pytest.mark.parametrize("closed_level", ["low", "high"])
def test_a_cut_sensor_wire_reads_as_a_door_stuck_open(closed_level: str) -> None:
    """What the controller sees when a reed wire is cut: the pin reads its pull resistor, which is
    the "open" level on either wiring - so the door is reported OPEN once, and never CLOSED again
    even when shut. Fail-safe: a cut wire never passes for a shut door, and pulses still work (a
    broken sensor does not block opening). Telling it from a door left open is the daemon's job."""
    rig = Rig(door_closed_level=closed_level).settled()
    rig.sim.break_sensor(2)
    assert [(c.lock, c.state) for c in rig.run(0.1)] == [(2, DoorState.OPEN)]
    rig.locks.pulse(2)
    assert rig.sim.door_is_open(2)
    rig.sim.close_door(2)
    assert rig.run(0.1) == []
    assert rig.locks.door(2) is DoorState.OPEN
    rig.sim.break_sensor(2, broken=False)  # wire repaired
    assert [(c.lock, c.state) for c in rig.run(0.1)] == [(2, DoorState.CLOSED)]


class Brownout(Exception):
    """Something interrupts the pulse (a signal, a failing clock) while the coil is energised."""


class InterruptedClock(FakeClock):
    def sleep(self, seconds: float) -> None:
        self.advance(seconds / 2)
        raise Brownout("interrupted half-way through the pulse")


def test_an_exception_during_the_pulse_still_de_energises_the_coil() -> None:
    section = make_section()
    clock = InterruptedClock()
    sim = SimGpio.for_section(section, clock)
    locks = GpioLockController(section, gpio=sim, clock=clock)
    with pytest.raises(Brownout):
        locks.pulse(3)
    (_, _), (t_on, on), (t_off, off_again) = sim.history(RELAYS[2])
    assert (on, off_again) == (SimGpio.LOW, SimGpio.HIGH)
    assert t_off - t_on == pytest.approx(0.1)
    assert not sim.overheated(3)
    assert sim.peak_coils == 1


class ThreadedClock(FakeClock):
    """Fake time for the sim, plus a real pause so concurrent pulses actually overlap in time."""

    def sleep(self, seconds: float) -> None:
        time.sleep(0.02)
        super().sleep(seconds)


def test_two_coils_are_never_energised_at_once() -> None:
    section = make_section()
    clock = ThreadedClock()
    sim = SimGpio.for_section(section, clock)
    locks = GpioLockController(section, gpio=sim, clock=clock)
    start = threading.Barrier(4)

    def open_lock(lock: int) -> None:
        start.wait()
        locks.pulse(lock)

    threads = [threading.Thread(target=open_lock, args=(n,)) for n in (1, 2, 3, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sim.peak_coils == 1
    intervals = sorted(p for lock in (1, 2, 3) for p in sim.pulses(lock))
    assert len(intervals) == 4
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert next_start >= end


def test_pins_pulled_away_by_another_cleanup_are_named_in_the_error(rig: Rig) -> None:
    rig.sim.cleanup()  # some other code in the process releases every pin (and the mode)
    with pytest.raises(
        GpioError, match=r"cannot read door for lock 1 on BCM pin 5: Please set pin numbering mode"
    ):
        rig.locks.poll()
    with pytest.raises(GpioError, match=r"cannot energise relay for lock 2 on BCM pin 27"):
        rig.locks.pulse(2)
    rig.locks.close()  # still closes: the failures are logged, not raised


# -- close -----------------------------------------------------------------------------------------
def test_close_switches_relays_off_releases_the_pins_and_is_safe_twice(rig: Rig) -> None:
    rig.locks.close()
    rig.locks.close()
    for pin in RELAYS:
        assert rig.sim.history(pin)[-1][1] == SimGpio.HIGH
    for pin in [*RELAYS, *DOORS]:
        with pytest.raises(RuntimeError, match="You must setup"):
            rig.sim.input(pin)  # back to un-set-up inputs
    assert rig.sim.getmode() == SimGpio.BCM  # only our pins were cleaned, not the whole module


def test_use_after_close_is_a_clear_error(rig: Rig) -> None:
    rig.locks.close()
    for call in (lambda: rig.locks.pulse(1), rig.locks.poll, lambda: rig.locks.door(1)):
        with pytest.raises(LockClosedError, match="closed"):
            call()


def test_the_context_manager_closes() -> None:
    rig = Rig()
    with rig.locks as locks:
        locks.pulse(1)
    with pytest.raises(LockClosedError):
        rig.locks.poll()
    assert all(rig.sim.history(pin)[-1][1] == SimGpio.HIGH for pin in RELAYS)


@pytest.mark.parametrize("lock", [0, 4, -1, True])
def test_a_lock_number_outside_the_wiring_is_refused(rig: Rig, lock: int) -> None:
    with pytest.raises(ValueError, match=r"locks are numbered 1\.\.3"):
        rig.locks.pulse(lock)
    assert rig.sim.peak_coils == 0


# -- configuration and the real library ------------------------------------------------------------
def test_no_relay_pins_is_a_config_error_naming_the_key() -> None:
    section = LocksSection(backend="gpio")
    with pytest.raises(LockConfigError, match=r"needs locks\.relay_pins"):
        GpioLockController(section, gpio=SimGpio([], [], clock=FakeClock()), clock=FakeClock())


def test_relay_pins_without_door_pins_is_a_config_error_naming_both_keys() -> None:
    # The config refuses this at load (tests/foundation/test_config.py); a section built without
    # validation (model_construct) still meets the controller's own check.
    with pytest.raises(ValueError, match="one of each per lock"):
        LocksSection(backend="gpio", relay_pins=[17, 27])
    section = LocksSection.model_construct(
        **{**LocksSection().model_dump(), "backend": "gpio", "relay_pins": [17, 27]}
    )
    sim = SimGpio([17, 27], [5, 6], clock=FakeClock())
    with pytest.raises(LockConfigError, match=r"locks\.door_pins has 0 pins .* locks\.relay_pins"):
        GpioLockController(section, gpio=sim, clock=FakeClock())
    assert sim.calls == []  # refused before touching the pins


def test_rpi_gpio_already_in_board_mode_is_refused_before_any_pin_is_driven() -> None:
    sim = SimGpio(RELAYS, DOORS, clock=FakeClock())
    sim.setmode(sim.BOARD)  # another part of the program chose header numbering
    with pytest.raises(GpioError, match=r"A different mode has already been set!.*BCM numbers"):
        GpioLockController(make_section(), gpio=sim, clock=FakeClock())
    assert all(sim.history(pin) == [] for pin in RELAYS)


def test_missing_rpi_gpio_tells_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)  # makes `import RPi.GPIO` fail as if absent
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    with pytest.raises(DeviceUnavailableError, match=r"pip install 'linli\[pi\]'"):
        GpioLockController(make_section())


class _NotAPiLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        raise RuntimeError("This module can only be run on a Raspberry Pi!")


class _NotAPiFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "RPi.GPIO":
            return importlib.machinery.ModuleSpec(fullname, _NotAPiLoader())
        return None


def test_rpi_gpio_off_a_pi_says_the_gpio_backend_needs_a_pi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = types.ModuleType("RPi")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NotAPiFinder(), *sys.meta_path])
    with pytest.raises(DeviceUnavailableError) as caught:
        GpioLockController(make_section())
    message = str(caught.value)
    assert "This module can only be run on a Raspberry Pi!" in message
    assert 'locks.backend = "gpio" needs a Raspberry Pi' in message


class NoGpioMemSim(SimGpio):
    """RPi.GPIO on a Pi without access to /dev/gpiomem: the first setup() fails."""

    def setup(
        self,
        channel: int | Sequence[int],
        direction: int,
        pull_up_down: int = 20,
        initial: int = -1,
    ) -> None:
        raise RuntimeError("No access to /dev/mem.  Try running as root!")


def test_no_gpio_access_is_reported_as_unavailable_with_rpi_gpio_s_reason() -> None:
    sim = NoGpioMemSim(RELAYS, DOORS, clock=FakeClock())
    with pytest.raises(
        DeviceUnavailableError, match=r"No access to /dev/mem.*needs a Raspberry Pi"
    ):
        GpioLockController(make_section(), gpio=sim, clock=FakeClock())


# -- the simulator holds the backend to RPi.GPIO's rules -------------------------------------------
def test_sim_refuses_what_rpi_gpio_refuses() -> None:
    sim = SimGpio([17], [5], clock=FakeClock())
    with pytest.raises(RuntimeError, match="Please set pin numbering mode"):
        sim.setup(17, sim.OUT)
    sim.setmode(sim.BCM)
    with pytest.raises(ValueError, match="A different mode has already been set"):
        sim.setmode(sim.BOARD)
    with pytest.raises(RuntimeError, match="has not been set up as an OUTPUT"):
        sim.output(17, sim.LOW)
    with pytest.raises(RuntimeError, match="You must setup"):
        sim.input(5)
    with pytest.raises(ValueError, match="pull_up_down parameter is not valid for outputs"):
        sim.setup(17, sim.OUT, pull_up_down=sim.PUD_UP)
    with pytest.raises(ValueError, match="initial parameter is not valid for inputs"):
        sim.setup(5, sim.IN, initial=sim.HIGH)
    sim.setup(5, sim.IN, pull_up_down=sim.PUD_UP)
    with pytest.raises(RuntimeError, match="has not been set up as an OUTPUT"):
        sim.output(5, sim.LOW)
    with pytest.warns(RuntimeWarning, match="nothing to clean up"):
        sim.cleanup(17)


def test_sim_coil_held_too_long_overheats_and_a_long_pulse_pops_the_door() -> None:
    clock = FakeClock()
    sim = SimGpio([17], [5], clock=clock)
    sim.setmode(sim.BCM)
    sim.setup(17, sim.OUT, initial=sim.HIGH)
    sim.output(17, sim.LOW)
    clock.advance(0.04)
    with pytest.raises(LatchedError):
        sim.open_door(1)  # not energised long enough to pull the bolt yet
    clock.advance(2.0)
    assert sim.overheated(1)
    sim.output(17, sim.HIGH)
    assert sim.door_is_open(1)
