"""What both simulated lock wirings (GPIO relays, RS485 boards) share about the mechanics."""

from __future__ import annotations


class LatchedError(RuntimeError):
    """A person tried to pull open a door whose lock is latched: it does not open."""
