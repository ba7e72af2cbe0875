"""The root of every error Linli raises: one family to catch, builtin kinds still visible.

Each class also inherits the builtin exception it refines (house rule 2), so code that only knows
``ValueError`` or ``OSError`` keeps working.
"""

from __future__ import annotations


class LinliError(Exception):
    """Base of every error raised by Linli code."""


class ConfigError(LinliError, ValueError):
    """The device configuration is invalid; the message names the key."""


class ProtocolError(LinliError, ValueError):
    """Bytes from a peripheral do not follow its protocol (bad checksum, length, framing...)."""


class DeviceError(LinliError, OSError):
    """A peripheral failed or reported a failure."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """A peripheral did not answer in time."""


class DeviceUnavailableError(DeviceError):
    """A peripheral is not there: port missing, reader unplugged, camera not opening."""


class DeviceClosedError(LinliError, RuntimeError):
    """A device object was used after ``close()``."""
