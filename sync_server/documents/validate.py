"""What a version may contain and which scope a document takes, checked before the database is
touched: a device refuses a whole version with one bad item and would ask for it forever, so the
server never stores one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from device.protocol import (
    DOCUMENT_NAMES,
    MAX_SYNC_BYTES,
    DocumentDelta,
    MessageError,
    encode,
    parse_sync,
)
from sync_server.documents.errors import DocumentPublishError, DocumentScopeError

__all__ = [
    "ITEM_KEY_MAX",
    "MAX_SCOPE_LENGTH",
    "SCOPED_DOCUMENTS",
    "check_residents",
    "check_scope",
    "checked_change",
]

SCOPED_DOCUMENTS: Final = frozenset({"residents"})
"""Documents kept once per community (scope = the community id, a kiosk gets its own
community's); every other document has one global history (scope ``""``)."""
MAX_SCOPE_LENGTH: Final = 32
"""The longest scope: an ``areas.id``."""
ITEM_KEY_MAX: Final = 256


def checked_change(
    doc: str, upserts: Mapping[str, Any], deletes: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """Validate a change before touching the database; messages never echo keys or values."""
    if doc not in DOCUMENT_NAMES:
        raise DocumentPublishError(
            f"unknown document {doc!r}; the documents are {', '.join(DOCUMENT_NAMES)}"
        )
    if not isinstance(upserts, Mapping):
        raise DocumentPublishError(f"{doc}: upserts must be a mapping of item key -> item")
    if isinstance(deletes, str | bytes):
        raise DocumentPublishError(f"{doc}: deletes must be a list of item keys, not one string")
    ups = dict(upserts)
    dels = list(dict.fromkeys(deletes))
    if not ups and not dels:
        raise DocumentPublishError(f"{doc}: a version must upsert or delete at least one item")
    for index, key in enumerate([*ups, *dels]):
        if not isinstance(key, str) or not 0 < len(key) <= ITEM_KEY_MAX:
            raise DocumentPublishError(
                f"{doc}: item key #{index + 1} must be a string of 1 to {ITEM_KEY_MAX} characters"
            )
    if set(ups) & set(dels):
        raise DocumentPublishError(f"{doc}: a key cannot be both upserted and deleted in a version")
    if doc == "residents":
        check_residents(ups, dels)
    try:
        json.dumps(ups, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DocumentPublishError(
            f"{doc}: an item is not JSON ({type(err).__name__}); use dicts, lists, strings, "
            "finite numbers, booleans and null"
        ) from None
    # Devices parse with the protocol's rules (sizes apart, checked under the lock): prove this
    # change passes them, or every device would refuse it and ask again forever.
    payload = encode(
        DocumentDelta.model_validate(
            {
                "kind": "delta",
                "doc": doc,
                "from_version": 0,
                "version": 1,
                "upserts": ups,
                "deletes": dels,
            }
        )
    )
    if len(payload) <= MAX_SYNC_BYTES:
        try:
            parse_sync(payload)
        except MessageError as err:
            raise DocumentPublishError(f"{doc}: devices would refuse this change: {err}") from None
    return ups, dels


def check_residents(upserts: dict[str, Any], deletes: list[str]) -> None:
    """Mirror of the device store's residents rule (device/store/documents.py): a device refuses
    a whole version with one bad record, and would ask for it again and again."""
    for index, key in enumerate([*upserts, *deletes]):
        if key != key.strip().upper():
            raise DocumentPublishError(
                f"residents: key #{index + 1} is not written as devices look it up; use the ID "
                "number without surrounding blanks and with an upper-case X"
            )
    for index, (key, item) in enumerate(upserts.items()):
        if not isinstance(item, Mapping) or not isinstance(item.get("household"), Mapping):
            raise DocumentPublishError(
                f"residents: item #{index + 1} must be {{'id_number': ..., 'household': {{...}}}}"
            )
        if str(item.get("id_number", "")).strip().upper() != key:
            raise DocumentPublishError(
                f"residents: item #{index + 1} has an id_number different from its key"
            )


def check_scope(doc: str, scope: str) -> None:
    """:class:`DocumentScopeError` unless ``scope`` fits ``doc``: a community id for a document
    of :data:`SCOPED_DOCUMENTS`, ``""`` for the others."""
    if not isinstance(scope, str):
        raise DocumentScopeError(f"{doc}: the scope must be a string, not {type(scope).__name__}")
    if doc in SCOPED_DOCUMENTS:
        if not 0 < len(scope) <= MAX_SCOPE_LENGTH or scope != scope.strip():
            raise DocumentScopeError(
                f"{doc} is kept per community: give scope=<the community id> (1 to "
                f"{MAX_SCOPE_LENGTH} characters, no surrounding blanks)"
            )
    elif scope:
        raise DocumentScopeError(
            f"{doc} is one document for every device: publish and read it with scope=''"
        )
