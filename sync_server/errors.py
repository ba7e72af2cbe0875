"""Errors raised by the sync server's storage: one root to catch, builtin kinds still visible.

The server may import nothing from ``device/`` except ``device.protocol`` (DESIGN.md section 2), so
its root error is its own; payload errors keep the protocol's ``MessageError`` classes.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error raised by ``sync_server`` code."""


class DatabaseConfigError(ServerError, ValueError):
    """The database URL names a backend or form the server does not support."""


class SchemaNotCurrentError(ServerError, RuntimeError):
    """The database has not been migrated to the schema this code expects."""


class DeviceMismatchError(ServerError, ValueError):
    """A payload names another device than the topic it arrived on."""
