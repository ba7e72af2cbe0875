"""Errors of the versioned documents: refused versions, scopes, conflicts, missing or corrupt
history rows, and the one request error (:class:`VersionAheadError`, a protocol ``MessageError``).

Messages name documents, scopes (community ids), versions and item positions, never item keys
or values: a ``residents`` key is an ID number.
"""

from __future__ import annotations

from device.protocol import MessageError
from sync_server.errors import ServerError

__all__ = [
    "CorruptDocumentError",
    "DocumentChangedError",
    "DocumentConflictError",
    "DocumentPublishError",
    "DocumentScopeError",
    "DocumentTooLargeError",
    "NoSuchVersionError",
    "VersionAheadError",
]


class DocumentPublishError(ServerError, ValueError):
    """A new version was refused before anything was stored; the message says what to fix."""


class DocumentTooLargeError(DocumentPublishError):
    """The version's delta, or the whole document it produces, would not fit one ``down/sync``."""


class DocumentScopeError(ServerError, ValueError):
    """A document was named with a scope it does not have: ``residents`` needs the community id,
    the other documents are global (scope ``""``)."""


class DocumentConflictError(ServerError, RuntimeError):
    """Other writers took every version number tried; publish again."""


class DocumentChangedError(DocumentConflictError):
    """``publish_version(..., if_version=N)``: the history is no longer at version N (another
    writer published first); nothing was stored. Compute the change again and retry."""


class NoSuchVersionError(ServerError, LookupError):
    """The document has no such version on this server."""


class CorruptDocumentError(ServerError, RuntimeError):
    """A stored row is not what this module writes (edited by hand, or another program)."""


class VersionAheadError(MessageError):
    """A device claims a version implausibly far ahead of the server's (refused, not answered)."""
