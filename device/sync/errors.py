"""Errors of the sync agent."""

from __future__ import annotations

from device.errors import LinliError


class SyncError(LinliError):
    """The sync agent cannot do what was asked."""


class SyncClosedError(SyncError, RuntimeError):
    """The agent was used after ``stop()``."""
