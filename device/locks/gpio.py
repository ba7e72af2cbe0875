"""Solenoid locks on relays and reed door sensors wired to the Pi's GPIO, through RPi.GPIO.

``locks.backend = "gpio"``: lock N's relay is on BCM pin ``relay_pins[N-1]`` and its door's reed
switch on ``door_pins[N-1]`` (HARDWARE.md section 6). RPi.GPIO is imported only when a controller
is built without an injected module, so this file imports on any machine; tests pass
``hardware_sim.gpio.SimGpio`` instead.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, cast

from device.clock import SYSTEM_CLOCK, Clock
from device.config import LocksSection
from device.errors import DeviceError, DeviceUnavailableError
from device.locks.base import (
    DoorChange,
    DoorState,
    LockClosedError,
    LockConfigError,
    LockController,
    LockError,
)
from device.locks.debounce import Debouncer

log = logging.getLogger(__name__)

_T = TypeVar("_T")

INSTALL_HINT = (
    "install it with `pip install 'linli[pi]'` on the Raspberry Pi (on a Pi 5, which RPi.GPIO "
    "does not support, install the drop-in `rpi-lgpio` instead)"
)


class GpioModule(Protocol):
    """The part of the RPi.GPIO module this backend uses (also what ``SimGpio`` offers)."""

    @property
    def BCM(self) -> int: ...
    @property
    def OUT(self) -> int: ...
    @property
    def IN(self) -> int: ...
    @property
    def HIGH(self) -> int: ...
    @property
    def LOW(self) -> int: ...
    @property
    def PUD_UP(self) -> int: ...
    @property
    def PUD_DOWN(self) -> int: ...

    def setwarnings(self, flag: bool) -> None: ...
    def setmode(self, mode: int) -> None: ...
    def setup(
        self,
        channel: int | Sequence[int],
        direction: int,
        pull_up_down: int = ...,
        initial: int = ...,
    ) -> None: ...
    def output(self, channel: int, value: int) -> None: ...
    def input(self, channel: int) -> int: ...
    def cleanup(self, channel: int | Sequence[int] | None = ...) -> None: ...


class GpioError(LockError, DeviceError):
    """RPi.GPIO refused what the controller needs: a pin released behind its back by another
    ``GPIO.cleanup()``, or BOARD numbering already chosen elsewhere in the process."""


def load_rpi_gpio() -> GpioModule:
    """Import RPi.GPIO, turning its import failures into errors a technician can act on."""
    try:
        module = importlib.import_module("RPi.GPIO")
    except ImportError as err:
        raise DeviceUnavailableError(
            'locks.backend = "gpio" needs the RPi.GPIO library, which is not installed '
            f"({err}): {INSTALL_HINT}"
        ) from err
    except RuntimeError as err:
        raise _not_a_pi(err) from err
    return cast(GpioModule, module)


def _not_a_pi(err: RuntimeError) -> DeviceUnavailableError:
    return DeviceUnavailableError(
        f"RPi.GPIO cannot reach the GPIO pins: {err}. "
        'locks.backend = "gpio" needs a Raspberry Pi, and a user in the `gpio` group '
        "(access to /dev/gpiomem); on a Pi 5 use `rpi-lgpio` instead of RPi.GPIO"
    )


class GpioLockController(LockController):
    """Pulses relay-driven solenoids and debounces reed sensors on GPIO pins.

    One coil at a time: the lock supply is sized for a single inrush (~1-1.5 A), so pulses from
    several threads are serialised. Doors are UNKNOWN until their reading has been stable for
    ``debounce_ms``; a reed switch cannot tell a cut wire from an open door (see docs/locks.md).
    """

    def __init__(
        self,
        section: LocksSection,
        *,
        gpio: GpioModule | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._relay_pins, self._door_pins = _check_wiring(section)
        self._gpio = gpio if gpio is not None else load_rpi_gpio()
        self._clock = clock
        self._pulse_s = section.pulse_ms / 1000
        g = self._gpio
        self._on, self._off = (g.LOW, g.HIGH) if section.relay_active_low else (g.HIGH, g.LOW)
        # A reed switch to ground needs the pull-up (an open door reads high); one to 3V3 needs
        # the pull-down.
        low = section.door_closed_level == "low"
        self._closed_level = g.LOW if low else g.HIGH
        self._pull = g.PUD_UP if low else g.PUD_DOWN
        self._debouncers = [Debouncer(section.debounce_ms / 1000) for _ in self._door_pins]
        self._states = [DoorState.UNKNOWN] * len(self._door_pins)
        self._pulse_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._set_up: list[int] = []
        self._closed = False
        self._setup_pins()
        log.info(
            "GPIO locks ready: relays on BCM %s (active %s), doors on BCM %s",
            self._relay_pins,
            "low" if section.relay_active_low else "high",
            self._door_pins,
        )

    # -- setup -----------------------------------------------------------------------------------
    def _setup_pins(self) -> None:
        g = self._gpio
        try:
            g.setmode(g.BCM)
        except ValueError as err:
            raise GpioError(
                f"cannot select BCM pin numbering: {err} - another part of this program uses "
                "RPi.GPIO with BOARD numbering, but locks.relay_pins and locks.door_pins are "
                "BCM numbers"
            ) from err
        try:
            # Safe state first (HARDWARE.md 6): RPi.GPIO writes `initial` before it switches the
            # pin to output, so no relay glitches on, whatever the pin held before this start.
            for pin in self._relay_pins:
                g.setup(pin, g.OUT, initial=self._off)
                self._set_up.append(pin)
            # Only now, so nothing precedes the safe state. RPi.GPIO's "channel already in use"
            # warning on a relay pin above is worth its line (the last run left a relay driven);
            # on the sensor inputs it is noise after every unclean stop.
            g.setwarnings(False)
            for pin in self._door_pins:
                g.setup(pin, g.IN, pull_up_down=self._pull)
                self._set_up.append(pin)
        except RuntimeError as err:
            self._release_pins()
            raise _not_a_pi(err) from err
        except ValueError as err:
            self._release_pins()
            raise LockConfigError(
                f"RPi.GPIO refused the wiring in locks.relay_pins {self._relay_pins} / "
                f"locks.door_pins {self._door_pins} (BCM numbers): {err}"
            ) from err

    def _release_pins(self) -> None:
        if not self._set_up:
            return
        pins, self._set_up = self._set_up, []
        try:
            self._gpio.cleanup(pins)
        except (RuntimeError, ValueError):
            # Runs on failure paths and in close(): the error that got us here matters more.
            log.exception("RPi.GPIO could not release BCM pins %s", pins)

    # -- LockController --------------------------------------------------------------------------
    @property
    def lock_count(self) -> int:
        return len(self._relay_pins)

    def pulse(self, lock: int) -> None:
        self._check_open()
        self._check_lock(lock)
        pin = self._relay_pins[lock - 1]
        with self._pulse_lock:
            self._check_open()  # close() may have run while this pulse waited for the previous one
            log.info("pulsing lock %d (relay BCM %d) for %.0f ms", lock, pin, self._pulse_s * 1000)
            interrupted = True
            try:
                self._pin_call(lock, pin, "energise relay", self._gpio.output, pin, self._on)
                self._clock.sleep(self._pulse_s)
                interrupted = False
            finally:
                # Whatever interrupted the pulse, the coil must not stay energised: it overheats.
                self._de_energise(lock, pin, report=not interrupted)

    def poll(self) -> list[DoorChange]:
        changes: list[DoorChange] = []
        with self._poll_lock:
            self._check_open()
            for index, pin in enumerate(self._door_pins):
                level = self._pin_call(index + 1, pin, "read door", self._gpio.input, pin)
                now = self._clock.monotonic()
                stable = self._debouncers[index].update(level == self._closed_level, now)
                if stable is None:
                    continue
                state = DoorState.CLOSED if stable else DoorState.OPEN
                self._states[index] = state
                changes.append(DoorChange(index + 1, state, now))
                log.info("door %d is %s (BCM %d)", index + 1, state, pin)
        return changes

    def door(self, lock: int) -> DoorState:
        self._check_open()
        self._check_lock(lock)
        return self._states[lock - 1]

    def close(self) -> None:
        # Waits for a running pulse (its own `finally` de-energises the coil) and a running poll.
        with self._pulse_lock, self._poll_lock:
            if self._closed:
                return
            self._closed = True
            try:
                for pin in self._relay_pins:
                    if pin in self._set_up:
                        self._de_energise_at_close(pin)
            finally:
                # Back to inputs: relay boards pull an un-driven input to their off level.
                self._release_pins()
        log.info("GPIO locks closed: relays de-energised, pins released")

    # -- helpers ---------------------------------------------------------------------------------
    def _de_energise(self, lock: int, pin: int, *, report: bool) -> None:
        try:
            self._pin_call(lock, pin, "de-energise relay", self._gpio.output, pin, self._off)
        except GpioError:
            if report:
                raise
            # The exception that interrupted the pulse is on its way up and says more.
            log.exception("could not de-energise lock %d after an interrupted pulse", lock)

    def _de_energise_at_close(self, pin: int) -> None:
        try:
            self._gpio.output(pin, self._off)
        except (RuntimeError, ValueError):
            # Keep going: the other relays must still be switched off, and cleanup() follows.
            log.exception("could not switch relay BCM %d off at close", pin)

    def _check_open(self) -> None:
        if self._closed:
            raise LockClosedError("the GPIO lock controller is closed; build a new one to continue")

    def _pin_call(self, lock: int, pin: int, what: str, func: Callable[..., _T], *args: int) -> _T:
        """Call RPi.GPIO, naming the lock and pin if it refuses (someone cleaned the pin up)."""
        try:
            return func(*args)
        except (RuntimeError, ValueError) as err:
            raise GpioError(
                f"cannot {what} for lock {lock} on BCM pin {pin}: {err}; another part of the "
                "program may have called GPIO.cleanup() - restart the locker daemon"
            ) from err


def _check_wiring(section: LocksSection) -> tuple[list[int], list[int]]:
    relays, doors = list(section.relay_pins), list(section.door_pins)
    if not relays:
        raise LockConfigError(
            'locks.backend = "gpio" needs locks.relay_pins: list the BCM pin of each lock\'s '
            "relay, lock 1 first"
        )
    if len(doors) != len(relays):
        raise LockConfigError(
            f"locks.door_pins has {len(doors)} pins but locks.relay_pins has {len(relays)}: "
            "list one door-sensor pin per lock, in the same order"
        )
    if len(set(relays) | set(doors)) != 2 * len(relays):
        raise LockConfigError(
            f"a BCM pin is used twice among locks.relay_pins {relays} and locks.door_pins {doors}"
        )
    return relays, doors
