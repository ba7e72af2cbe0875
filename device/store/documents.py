"""The cache of versioned documents the server publishes on ``down/sync``.

A document is a map ``item key -> JSON item`` with a version number. A delta moves it from exactly
the version the device has to a newer one, all or nothing; a snapshot replaces it. Items of
:data:`SEALED_DOCUMENTS` (resident records) are sealed with the device key (associated data =
``doc/row key``) and their row key is the keyed hash of the item key (the ID number), so no ID
number, name, address or phone number is written to the database in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from device.store.errors import (
    DocumentError,
    DocumentVersionError,
    StaleDocumentError,
    UnknownDocumentError,
)

if TYPE_CHECKING:
    from device.store.db import Store, Transaction

log = logging.getLogger(__name__)

DOCUMENTS = ("residents", "catalogue", "notices", "revocations", "config")
SEALED_DOCUMENTS = frozenset({"residents"})
LOOKUP_INFO = b"linli resident lookup v1"


def normalise_id_number(id_number: str) -> str:
    """The form hashed for lookups: no surrounding blanks, a trailing ``x`` written ``X``."""
    return id_number.strip().upper()


class Documents:
    """Versioned documents of a :class:`~device.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lookup_key = store.key.derive(LOOKUP_INFO)

    def lookup_hash(self, id_number: str) -> str:
        """HMAC-SHA256 of the ID number under a key derived from the device key (hex)."""
        digest = hmac.new(self._lookup_key, normalise_id_number(id_number).encode(), hashlib.sha256)
        return digest.hexdigest()

    def version(self, doc: str) -> int:
        """The version the device has (0: never synced)."""
        _check_doc(doc)
        with self._store.reading() as conn:
            row = conn.execute("SELECT version FROM doc_versions WHERE doc = ?", (doc,)).fetchone()
        return 0 if row is None else int(row[0])

    def get(self, doc: str, key: str) -> Any | None:
        """One item by its key (for ``residents``: the ID number), or None."""
        _check_doc(doc)
        row_key = self._row_key(doc, key)
        with self._store.reading() as conn:
            row = conn.execute(
                "SELECT sealed, body FROM doc_items WHERE doc = ? AND key = ?", (doc, row_key)
            ).fetchone()
        return None if row is None else self._decode(doc, row_key, row[0], row[1])

    def items(self, doc: str) -> Iterator[tuple[str, Any]]:
        """Every ``(row key, item)``; for sealed documents the row key is the lookup hash."""
        _check_doc(doc)
        with self._store.reading() as conn:
            rows = conn.execute(
                "SELECT key, sealed, body FROM doc_items WHERE doc = ? ORDER BY key", (doc,)
            ).fetchall()
        for key, sealed, body in rows:
            yield key, self._decode(doc, key, sealed, body)

    def count(self, doc: str) -> int:
        _check_doc(doc)
        with self._store.reading() as conn:
            row = conn.execute("SELECT count(*) FROM doc_items WHERE doc = ?", (doc,)).fetchone()
        return int(row[0])

    def apply_delta(
        self,
        doc: str,
        from_version: int,
        to_version: int,
        upserts: Mapping[str, Any],
        deletes: Iterable[str] = (),
        *,
        tx: Transaction | None = None,
    ) -> None:
        """Apply a delta atomically.

        :class:`StaleDocumentError` if the device already has ``to_version`` (ignore it);
        :class:`DocumentVersionError` if ``from_version`` is not the device's version (ask the
        server for a snapshot). Nothing is changed in either case, nor when an item is invalid.
        """
        _check_doc(doc)
        if to_version <= from_version:
            raise DocumentError(
                f"{doc} delta goes from version {from_version} to {to_version}: not forward"
            )
        deletes = list(deletes)
        with self._store.writing(tx) as joined:
            current = self._version_in(joined, doc)
            if to_version <= current:
                raise StaleDocumentError(
                    f"{doc} is already at version {current}; delta to {to_version} ignored",
                    doc=doc,
                    current=current,
                    from_version=from_version,
                )
            if from_version != current:
                raise DocumentVersionError(
                    f"{doc} delta starts at version {from_version} but the device has "
                    f"{current}; request a snapshot",
                    doc=doc,
                    current=current,
                    from_version=from_version,
                )
            self._set_version(joined, doc, to_version)
            for key in deletes:
                joined.conn.execute(
                    "DELETE FROM doc_items WHERE doc = ? AND key = ?",
                    (doc, self._row_key(doc, key)),
                )
            self._upsert(joined, doc, upserts)
        log.info("%s: delta %d -> %d applied", doc, from_version, to_version)

    def apply_snapshot(
        self,
        doc: str,
        version: int,
        items: Mapping[str, Any],
        *,
        tx: Transaction | None = None,
    ) -> None:
        """Replace the whole document atomically; :class:`StaleDocumentError` if older."""
        _check_doc(doc)
        if version < 1:
            raise DocumentError(f"{doc} snapshot has version {version}; versions start at 1")
        with self._store.writing(tx) as joined:
            current = self._version_in(joined, doc)
            if version < current:
                raise StaleDocumentError(
                    f"{doc} is already at version {current}; snapshot {version} ignored",
                    doc=doc,
                    current=current,
                    from_version=version,
                )
            self._set_version(joined, doc, version)
            joined.conn.execute("DELETE FROM doc_items WHERE doc = ?", (doc,))
            self._upsert(joined, doc, items)
        log.info("%s: snapshot version %d applied (%d items)", doc, version, len(items))

    def _upsert(self, tx: Transaction, doc: str, items: Mapping[str, Any]) -> None:
        sealed = doc in SEALED_DOCUMENTS
        for key, item in items.items():
            _check_item(doc, key, item)
            row_key = self._row_key(doc, key)
            body = _encode(doc, item)
            if sealed:
                body = self._store.key.seal(body, _aad(doc, row_key))
            tx.conn.execute(
                "INSERT OR REPLACE INTO doc_items (doc, key, sealed, body) VALUES (?, ?, ?, ?)",
                (doc, row_key, int(sealed), body),
            )

    def _row_key(self, doc: str, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise DocumentError(f"{doc} item keys are non-empty strings")
        return self.lookup_hash(key) if doc in SEALED_DOCUMENTS else key

    def _decode(self, doc: str, row_key: str, sealed: int, body: bytes) -> Any:
        raw = self._store.key.open(bytes(body), _aad(doc, row_key)) if sealed else bytes(body)
        return json.loads(raw)

    def _version_in(self, tx: Transaction, doc: str) -> int:
        row = tx.conn.execute("SELECT version FROM doc_versions WHERE doc = ?", (doc,)).fetchone()
        return 0 if row is None else int(row[0])

    def _set_version(self, tx: Transaction, doc: str, version: int) -> None:
        tx.conn.execute(
            "INSERT INTO doc_versions (doc, version, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (doc) DO UPDATE SET version = excluded.version, "
            "updated_at = excluded.updated_at",
            (doc, version, self._store.clock.time()),
        )


def _check_doc(doc: str) -> None:
    if doc not in DOCUMENTS:
        raise UnknownDocumentError(
            f"unknown document {doc!r}; the store keeps {', '.join(DOCUMENTS)}"
        )


def _check_item(doc: str, key: str, item: Any) -> None:
    if doc == "residents":
        if not isinstance(item, Mapping) or not isinstance(item.get("household"), Mapping):
            raise DocumentError("a residents item is {'id_number': ..., 'household': {...}}")
        if normalise_id_number(str(item.get("id_number", ""))) != normalise_id_number(key):
            raise DocumentError("a residents item's id_number differs from its key")


def _encode(doc: str, item: Any) -> bytes:
    try:
        return json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise DocumentError(f"a {doc} item is not JSON: {err}") from err


def _aad(doc: str, row_key: str) -> bytes:
    return f"{doc}/{row_key}".encode()
