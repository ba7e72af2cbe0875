"""Versioned documents the server publishes and devices pull over ``up/sync-req``/``down/sync``.

:mod:`.history` stores them (one history per document, and per community for ``residents``),
folds them and decides what a device needs; :mod:`.validate` checks a version before it is
stored; :mod:`.server` is the consumer's handler, which picks the history a device reads and
publishes the answer; :mod:`.errors` holds their errors. docs/documents.md is the guide.
"""

from __future__ import annotations

from sync_server.documents.errors import (
    CorruptDocumentError,
    DocumentChangedError,
    DocumentConflictError,
    DocumentPublishError,
    DocumentScopeError,
    DocumentTooLargeError,
    NoSuchVersionError,
    VersionAheadError,
)
from sync_server.documents.history import (
    CHECKPOINT_EVERY,
    MAX_AHEAD,
    MAX_CHAIN_BYTES,
    MAX_DELTA_CHAIN,
    answer,
    latest_version,
    publish_version,
    rebase,
    scopes,
    snapshot,
)
from sync_server.documents.server import (
    DocumentServer,
    Publish,
    kiosk_community,
    parse_request,
    safe_problems,
)
from sync_server.documents.validate import MAX_SCOPE_LENGTH, SCOPED_DOCUMENTS

__all__ = [
    "CHECKPOINT_EVERY",
    "MAX_AHEAD",
    "MAX_CHAIN_BYTES",
    "MAX_DELTA_CHAIN",
    "MAX_SCOPE_LENGTH",
    "SCOPED_DOCUMENTS",
    "CorruptDocumentError",
    "DocumentChangedError",
    "DocumentConflictError",
    "DocumentPublishError",
    "DocumentScopeError",
    "DocumentServer",
    "DocumentTooLargeError",
    "NoSuchVersionError",
    "Publish",
    "VersionAheadError",
    "answer",
    "kiosk_community",
    "latest_version",
    "parse_request",
    "publish_version",
    "rebase",
    "safe_problems",
    "scopes",
    "snapshot",
]
