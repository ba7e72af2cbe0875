"""Locker locks and door sensors: one interface, a GPIO and an RS485 backend (docs/locks.md)."""

from device.locks.base import (
    DoorChange,
    DoorState,
    DuplicateAddressError,
    LockBusError,
    LockClosedError,
    LockConfigError,
    LockController,
    LockError,
    LockPortUnavailableError,
    LockTimeoutError,
)

__all__ = [
    "DoorChange",
    "DoorState",
    "DuplicateAddressError",
    "LockBusError",
    "LockClosedError",
    "LockConfigError",
    "LockController",
    "LockError",
    "LockPortUnavailableError",
    "LockTimeoutError",
]
