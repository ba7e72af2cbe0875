"""What the locker asks of its locks and door sensors, whatever the wiring (HARDWARE.md section 6).

Locks are numbered 1..``lock_count`` (the compartment numbers). Two backends implement
:class:`LockController`: GPIO relays and reed sensors through RPi.GPIO (``device/locks/gpio.py``)
and RS485 lock-control boards of the "8A" family (``device/locks/rs485.py``). The locker daemon owns
the controller and calls :meth:`LockController.poll` from its own loop; nothing here starts threads.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from device.errors import (
    DeviceClosedError,
    DeviceError,
    DeviceTimeoutError,
    DeviceUnavailableError,
    LinliError,
)


class DoorState(enum.StrEnum):
    """A door as its sensor reports it once debounced."""

    CLOSED = "closed"
    OPEN = "open"
    UNKNOWN = "unknown"
    """No trustworthy reading: not stable yet since start, or its board does not answer."""


@dataclass(frozen=True)
class DoorChange:
    """A door's debounced state changed; ``at`` is the controller clock's monotonic time at which
    the new state was confirmed (stable for the debounce time, or reported by the board)."""

    lock: int
    state: DoorState
    at: float


class LockError(LinliError):
    """Base of the errors of the lock layer."""


class LockConfigError(LockError, ValueError):
    """The wiring described by the configuration is impossible (pin used twice, lock 0...)."""


class LockBusError(LockError, DeviceError):
    """A lock-control board did not answer sensibly (garbled frame, wrong reply)."""


class LockTimeoutError(LockBusError, DeviceTimeoutError):
    """A lock-control board did not answer in time: unpowered, wrong address, cable cut."""


class LockPortUnavailableError(LockBusError, DeviceUnavailableError):
    """The serial port of the lock bus (``locks.port``) cannot be opened or has gone away."""


class DuplicateAddressError(LockBusError):
    """Two boards answer on one RS485 address: set their address switches apart."""


class LockClosedError(LockError, DeviceClosedError):
    """The controller was used after ``close()``."""


class LockController(abc.ABC):
    """Energises lock solenoids and reports debounced door states.

    A context manager; ``close()`` leaves every output de-energised and is safe twice; any other
    call after it raises :class:`LockClosedError`. Construction forces every output to the safe
    (de-energised, locked) state before anything else is done with the hardware.
    """

    @property
    @abc.abstractmethod
    def lock_count(self) -> int:
        """How many locks (and door sensors) there are: locks are 1..lock_count."""

    @abc.abstractmethod
    def pulse(self, lock: int) -> None:
        """Energise ``lock`` for the configured pulse and return once it is de-energised again.

        RS485 boards time the pulse themselves: there it returns once the board confirmed the
        command. Raises :class:`LockTimeoutError` / :class:`LockBusError` when the command could
        not be delivered (RS485), ``ValueError`` for a lock number outside 1..lock_count.
        Whether the door then opened is for the caller to watch through :meth:`poll`.
        """

    @abc.abstractmethod
    def poll(self) -> list[DoorChange]:
        """Read the sensors now; return the debounced changes since the last call, in order.

        Call it often (every few ms for GPIO: debounce is counted in the controller's clock).
        A board that stops answering turns its doors to UNKNOWN (one change each), and back.
        """

    @abc.abstractmethod
    def door(self, lock: int) -> DoorState:
        """The debounced state of ``lock``'s door as of the last :meth:`poll`."""

    def doors(self) -> dict[int, DoorState]:
        """Every door's state as of the last :meth:`poll`."""
        return {lock: self.door(lock) for lock in range(1, self.lock_count + 1)}

    @abc.abstractmethod
    def close(self) -> None:
        """De-energise everything and release the hardware; safe twice."""

    def __enter__(self) -> LockController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_lock(self, lock: int) -> None:
        if not isinstance(lock, int) or isinstance(lock, bool) or not 1 <= lock <= self.lock_count:
            raise ValueError(f"no lock {lock!r}: locks are numbered 1..{self.lock_count}")
