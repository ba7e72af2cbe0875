"""A simulated RPi.GPIO module with a locker behind its pins: relays, solenoids, doors, reeds.

:class:`SimGpio` has the module surface ``device.locks.gpio`` uses and refuses misuse the way
RPi.GPIO 0.7 does (same exception types and messages), so the backend is held to the real API. Its
world face lets a test act as a person or a fault (``open_door``, ``jam``, ``break_sensor``,
``set_bounce``) and read what the hardware went through (``history``, ``pulses``, ``calls``,
``overheated``). Time is the injected clock's: bounce and coil timing follow a ``FakeClock``.
"""

from __future__ import annotations

import logging
import random
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from device.clock import Clock
from device.config import LocksSection
from hardware_sim.lock_physics import LatchedError

log = logging.getLogger(__name__)

# BOARD (header position) -> BCM for the 40-pin header; other positions are power or ground.
BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip

_MODE_MESSAGE = (
    "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
)


@dataclass
class _Compartment:
    """One lock's mechanics: coil, latch, door and reed switch."""

    relay_pin: int
    door_pin: int
    door_open: bool = False
    jammed: bool = False
    sensor_broken: bool = False
    energised_since: float | None = None
    pulses: list[tuple[float, float]] = field(default_factory=list)
    chatter: list[float] = field(default_factory=list)
    """Times at which the bouncing reed contact flips; the last flip lands on the door's state."""


class SimGpio:
    """RPi.GPIO's module surface (the subset a lock controller needs) over simulated wiring.

    Lock N's relay is on BCM ``relay_pins[N-1]``, its door's reed switch on ``door_pins[N-1]``.
    Pins power up with a random output latch (``rng``), as after an unclean stop, so a backend that
    does not write ``initial=`` at setup can energise a coil. A coil energised for ``release_s``
    releases its latch and the door's spring pops it open when the coil lets go (unless jammed);
    held longer than ``max_on_s`` it overheats. Thread-safe: backends pulse from several threads.
    """

    BCM = 11
    BOARD = 10
    OUT = 0
    IN = 1
    HIGH = 1
    LOW = 0
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22
    VERSION = "0.7.1 (simulated)"

    def __init__(
        self,
        relay_pins: Sequence[int],
        door_pins: Sequence[int],
        *,
        clock: Clock,
        relay_active_low: bool = True,
        door_closed_level: Literal["low", "high"] = "low",
        release_s: float = 0.05,
        max_on_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        pins = [*relay_pins, *door_pins]
        if len(relay_pins) != len(door_pins) or len(set(pins)) != len(pins):
            raise ValueError(
                f"wiring needs distinct relay and door pins, one each per lock: {pins}"
            )
        self._clock = clock
        self._on = self.LOW if relay_active_low else self.HIGH
        self._closed_level = self.LOW if door_closed_level == "low" else self.HIGH
        self.release_s, self.max_on_s = release_s, max_on_s
        self._rng = rng if rng is not None else random.Random(0)  # noqa: S311  # physics, not secrets
        self._guard = threading.RLock()
        self._mode: int | None = None
        self._warnings = True
        self._direction: dict[int, int] = {}  # BCM pin -> IN/OUT, for pins this program set up
        self._pull: dict[int, int] = {}
        self._latch = {pin: self._rng.randint(0, 1) for pin in range(54)}
        self._history: dict[int, list[tuple[float, int]]] = {}
        self._compartments = [
            _Compartment(r, d) for r, d in zip(relay_pins, door_pins, strict=True)
        ]
        self._by_relay = {c.relay_pin: c for c in self._compartments}
        self._by_door = {c.door_pin: c for c in self._compartments}
        self._bounce: tuple[int, float] = (0, 0.0)
        self.peak_coils = 0
        """The most coils ever energised at the same time (the supply is sized for one)."""
        self.calls: list[str] = []
        """Every API call in order, one entry per channel, e.g. ``setup(17, OUT, initial=HIGH)``."""

    @classmethod
    def for_section(
        cls,
        section: LocksSection,
        clock: Clock,
        *,
        release_s: float = 0.05,
        max_on_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> SimGpio:
        """The wiring a ``[locks]`` section describes."""
        return cls(
            section.relay_pins,
            section.door_pins,
            clock=clock,
            relay_active_low=section.relay_active_low,
            door_closed_level=section.door_closed_level,
            release_s=release_s,
            max_on_s=max_on_s,
            rng=rng,
        )

    # -- RPi.GPIO surface ------------------------------------------------------------------------
    def setwarnings(self, flag: bool) -> None:
        with self._guard:
            self.calls.append(f"setwarnings({bool(flag)})")
            self._warnings = bool(flag)

    def setmode(self, mode: int) -> None:
        with self._guard:
            self.calls.append(f"setmode({_name(mode, {10: 'BOARD', 11: 'BCM'})})")
            if self._mode is not None and mode != self._mode:
                raise ValueError("A different mode has already been set!")
            if mode not in (self.BOARD, self.BCM):
                raise ValueError("An invalid mode was passed to setmode()")
            self._mode = mode

    def getmode(self) -> int | None:
        with self._guard:
            return self._mode

    def setup(
        self,
        channel: int | Sequence[int],
        direction: int,
        pull_up_down: int = PUD_OFF,
        initial: int = -1,
    ) -> None:
        with self._guard:
            channels = _channels(channel)
            if direction not in (self.IN, self.OUT):
                raise ValueError("An invalid direction was passed to setup()")
            if direction == self.OUT and pull_up_down != self.PUD_OFF:
                raise ValueError("pull_up_down parameter is not valid for outputs")
            if direction == self.IN and initial != -1:
                raise ValueError("initial parameter is not valid for inputs")
            if pull_up_down not in (self.PUD_OFF, self.PUD_DOWN, self.PUD_UP):
                raise ValueError(
                    "Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN"
                )
            for ch in channels:
                self.calls.append(_setup_call(ch, direction, pull_up_down, initial))
                self._setup_one(self._pin(ch), direction, pull_up_down, initial)

    def output(self, channel: int | Sequence[int], value: int | Sequence[int]) -> None:
        with self._guard:
            channels = _channels(channel)
            values = _values(value, len(channels), isinstance(channel, int))
            for ch, level in zip(channels, values, strict=True):
                self.calls.append(f"output({ch}, {'HIGH' if level else 'LOW'})")
                pin = self._pin(ch)
                if self._direction.get(pin) != self.OUT:
                    raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
                self._drive(pin, 1 if level else 0)

    def input(self, channel: int) -> int:
        with self._guard:
            self.calls.append(f"input({channel})")
            pin = self._pin(channel)
            direction = self._direction.get(pin)
            if direction is None:
                raise RuntimeError("You must setup() the GPIO channel first")
            if direction == self.OUT:
                return self._latch[pin]
            # A reed switch only ever connects the pin to the closed level; open (or cut), the
            # pin reads its pull resistor.
            compartment = self._by_door.get(pin)
            if compartment is None or compartment.sensor_broken:
                return self._pull_level(pin)
            if not self._contact_closed(compartment):
                return self._pull_level(pin)
            return self._closed_level

    def cleanup(self, channel: int | Sequence[int] | None = None) -> None:
        with self._guard:
            if channel is None:
                self.calls.append("cleanup()")
                pins = list(self._direction)
                self._mode = None
            else:
                channels = _channels(channel)
                self.calls.extend(f"cleanup({ch})" for ch in channels)
                pins = [p for p in (self._pin(ch) for ch in channels) if p in self._direction]
            for pin in pins:
                # RPi.GPIO puts a cleaned-up channel back to an input without pull.
                del self._direction[pin]
                self._pull.pop(pin, None)
                self._coil_changed(pin)
            if not pins and self._warnings:
                warnings.warn(
                    "No channels have been set up yet - nothing to clean up!  Try cleaning up at "
                    "the end of your program instead!",
                    RuntimeWarning,
                    stacklevel=2,
                )

    # -- world: the common simulator face --------------------------------------------------------
    def door_is_open(self, lock: int) -> bool:
        with self._guard:
            return self._compartment(lock).door_open

    def open_door(self, lock: int) -> None:
        """A person pulls the door: it opens only while the coil holds the latch released."""
        with self._guard:
            compartment = self._compartment(lock)
            if compartment.door_open:
                return
            if not self._released(compartment):
                why = "jammed" if compartment.jammed else "latched"
                raise LatchedError(f"lock {lock} is {why}: the door does not open")
            self._set_door(compartment, is_open=True)

    def force_open(self, lock: int) -> None:
        with self._guard:
            self._set_door(self._compartment(lock), is_open=True)

    def close_door(self, lock: int) -> None:
        with self._guard:
            self._set_door(self._compartment(lock), is_open=False)

    def jam(self, lock: int, jammed: bool = True) -> None:
        with self._guard:
            self._compartment(lock).jammed = jammed

    def pulses(self, lock: int) -> list[tuple[float, float]]:
        with self._guard:
            return list(self._compartment(lock).pulses)

    # -- world: GPIO-specific faults and records -------------------------------------------------
    def break_sensor(self, lock: int, broken: bool = True) -> None:
        """Cut the reed switch's wire: its pin reads the pull resistor's level whatever the door."""
        with self._guard:
            self._compartment(lock).sensor_broken = broken

    def set_bounce(self, toggles: int, window_s: float) -> None:
        """From now on every physical door change makes the reed flip ``toggles`` times (the last
        flip landing on the new state) at random moments within ``window_s`` on the sim clock."""
        if toggles < 0 or window_s < 0:
            raise ValueError(
                f"bounce needs toggles >= 0 and window_s >= 0, got {toggles}, {window_s}"
            )
        with self._guard:
            self._bounce = (toggles, window_s)

    def history(self, pin: int) -> list[tuple[float, int]]:
        """Every level driven on BCM ``pin`` as (monotonic time, HIGH/LOW), in order."""
        with self._guard:
            return list(self._history.get(pin, []))

    def overheated(self, lock: int) -> bool:
        """Whether ``lock``'s coil was ever held energised longer than ``max_on_s``."""
        with self._guard:
            compartment = self._compartment(lock)
            held = [end - start for start, end in compartment.pulses]
            if compartment.energised_since is not None:
                held.append(self._clock.monotonic() - compartment.energised_since)
            return any(seconds > self.max_on_s for seconds in held)

    # -- internals -------------------------------------------------------------------------------
    def _pin(self, channel: int) -> int:
        if self._mode is None:
            raise RuntimeError(_MODE_MESSAGE)
        pin = channel if self._mode == self.BCM else BOARD_TO_BCM.get(channel, -1)
        if not 0 <= pin <= 53:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return pin

    def _setup_one(self, pin: int, direction: int, pull: int, initial: int) -> None:
        # As RPi.GPIO: the output latch is written before the pin becomes an output, so a correct
        # `initial` never glitches; without it the pin drives whatever the latch held.
        if direction == self.OUT and initial in (self.LOW, self.HIGH):
            self._latch[pin] = initial
        self._direction[pin] = direction
        self._pull[pin] = self.PUD_OFF if direction == self.OUT else pull
        if direction == self.OUT:
            self._drive(pin, self._latch[pin])
        else:
            self._coil_changed(pin)

    def _drive(self, pin: int, level: int) -> None:
        self._latch[pin] = level
        self._history.setdefault(pin, []).append((self._clock.monotonic(), level))
        self._coil_changed(pin)

    def _coil_changed(self, pin: int) -> None:
        compartment = self._by_relay.get(pin)
        if compartment is None:
            return
        now = self._clock.monotonic()
        energised = self._direction.get(pin) == self.OUT and self._latch[pin] == self._on
        if energised and compartment.energised_since is None:
            compartment.energised_since = now
            self.peak_coils = max(self.peak_coils, self._coils_on())
        elif not energised and compartment.energised_since is not None:
            start, compartment.energised_since = compartment.energised_since, None
            compartment.pulses.append((start, now))
            if now - start >= self.release_s and not compartment.jammed:
                self._set_door(compartment, is_open=True)  # the kicker spring pops it open

    def _coils_on(self) -> int:
        return sum(c.energised_since is not None for c in self._compartments)

    def _released(self, compartment: _Compartment) -> bool:
        since = compartment.energised_since
        held = since is not None and self._clock.monotonic() - since >= self.release_s
        return held and not compartment.jammed

    def _set_door(self, compartment: _Compartment, *, is_open: bool) -> None:
        if compartment.door_open == is_open:
            return
        compartment.door_open = is_open
        toggles, window_s = self._bounce
        now = self._clock.monotonic()
        compartment.chatter = sorted(now + self._rng.uniform(0, window_s) for _ in range(toggles))
        log.debug("door on BCM %d %s", compartment.door_pin, "opened" if is_open else "closed")

    def _contact_closed(self, compartment: _Compartment) -> bool:
        now = self._clock.monotonic()
        pending = sum(1 for t in compartment.chatter if t > now)
        closed = not compartment.door_open
        return closed if pending % 2 == 0 else not closed

    def _pull_level(self, pin: int) -> int:
        pull = self._pull.get(pin, self.PUD_OFF)
        if pull == self.PUD_UP:
            return self.HIGH
        if pull == self.PUD_DOWN:
            return self.LOW
        return self._rng.randint(0, 1)  # a floating input reads noise

    def _compartment(self, lock: int) -> _Compartment:
        if not 1 <= lock <= len(self._compartments):
            raise ValueError(f"no lock {lock!r}: locks are numbered 1..{len(self._compartments)}")
        return self._compartments[lock - 1]


def _channels(channel: int | Sequence[int]) -> list[int]:
    if isinstance(channel, int):
        return [channel]
    if isinstance(channel, list | tuple) and all(isinstance(ch, int) for ch in channel):
        return list(channel)
    raise ValueError("Channel must be an integer or list/tuple of integers")


def _values(value: int | Sequence[int], count: int, single_channel: bool) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    if not isinstance(value, list | tuple) or not all(isinstance(v, int) for v in value):
        raise ValueError("Value must be an integer/boolean or a list/tuple of integers/booleans")
    if single_channel or len(value) != count:
        raise RuntimeError("Number of channels != number of values")
    return list(value)


def _name(value: int, names: dict[int, str]) -> str:
    return names.get(value, str(value))


def _setup_call(channel: int, direction: int, pull: int, initial: int) -> str:
    if direction == SimGpio.OUT:
        extra = "" if initial == -1 else f", initial={_name(initial, {0: 'LOW', 1: 'HIGH'})}"
        return f"setup({channel}, OUT{extra})"
    names = {20: "PUD_OFF", 21: "PUD_DOWN", 22: "PUD_UP"}
    return f"setup({channel}, {_name(direction, {1: 'IN'})}, pull_up_down={_name(pull, names)})"
