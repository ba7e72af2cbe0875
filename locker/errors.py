"""Errors of the locker firmware: one root, :class:`LockerError`, under ``LinliError``."""

from __future__ import annotations

from device.errors import LinliError


class LockerError(LinliError):
    """Something the locker firmware refused or could not do."""


class UnknownCompartmentError(LockerError, LookupError):
    """A compartment number this locker does not have."""

    def __init__(self, message: str, number: object = None) -> None:
        super().__init__(message)
        self.number = number


class CompartmentStateError(LockerError, ValueError):
    """A transition the state machine does not allow, or a compartment in the wrong state."""

    def __init__(self, message: str, number: int | None = None) -> None:
        super().__init__(message)
        self.number = number


class NoFreeCompartmentError(LockerError):
    """No free compartment of the size asked for (a deposit command fails with this)."""


class CompartmentBusyError(LockerError):
    """An open request for this compartment is already in progress."""
