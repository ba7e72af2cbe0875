"""Errors of the resident records area (一户一档): one root to catch, builtin kinds still visible.

Messages name files, keys, columns and row numbers, never a cell's value: a value may be an ID
number, a name or an address, and these messages reach logs and terminals.
"""

from __future__ import annotations

from sync_server.errors import ServerError

__all__ = [
    "ExportError",
    "MappingError",
    "RecordsError",
    "SpreadsheetError",
    "UnknownCommunityError",
]


class RecordsError(ServerError):
    """Base of every error raised by ``sync_server.records``."""


class MappingError(RecordsError, ValueError):
    """The column mapping file is invalid; the message names the file and the key."""


class SpreadsheetError(RecordsError, ValueError):
    """The spreadsheet cannot be read as the mapping describes it (format, encoding, sheet,
    header row, a required column missing); nothing was imported."""


class UnknownCommunityError(RecordsError, LookupError):
    """The community named for an import is not an ``areas`` row of level ``community``."""


class ExportError(RecordsError, ValueError):
    """An export cannot be written (unknown file type, directory missing)."""
