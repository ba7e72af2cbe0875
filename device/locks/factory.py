"""The one place that turns a ``[locks]`` config section into a controller (no platform checks)."""

from __future__ import annotations

from device.clock import SYSTEM_CLOCK, Clock
from device.config import LocksSection
from device.locks.base import LockController


def open_locks(section: LocksSection, *, clock: Clock = SYSTEM_CLOCK) -> LockController | None:
    """The controller ``section.backend`` names, outputs forced safe; None for ``"none"``.

    Backends are imported here, when chosen, so a kiosk never loads pyserial's or RPi.GPIO's lock
    code and a GPIO locker never needs a serial port.
    """
    if section.backend == "gpio":
        from device.locks.gpio import GpioLockController

        return GpioLockController(section, clock=clock)
    if section.backend == "rs485":
        from device.locks.rs485 import Rs485LockController

        return Rs485LockController(section, clock=clock)
    return None
