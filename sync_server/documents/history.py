"""The stored histories of versioned documents: publishing versions, folding them, and what a
device that has version N needs (docs/documents.md).

Each version is one row of ``documents``: the delta from the version before it in the same
history. A history is a document and a scope: ``""`` for the global documents, the community id
for ``residents`` (:data:`SCOPED_DOCUMENTS`). Version numbers are unique per document across all
its scopes, so a number names one community's version and a kiosk holding another community's
(moved, or synced before scopes existed) is never mistaken for a current one. Nothing here knows
MQTT: :mod:`sync_server.documents.server` answers the requests.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Engine, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from device.protocol import (
    DOCUMENT_NAMES,
    MAX_SEQ,
    MAX_SYNC_BYTES,
    DocumentDelta,
    DocumentSnapshot,
    SyncRequest,
    encode,
)
from sync_server.documents.errors import (
    CorruptDocumentError,
    DocumentChangedError,
    DocumentConflictError,
    DocumentPublishError,
    DocumentTooLargeError,
    NoSuchVersionError,
    VersionAheadError,
)
from sync_server.documents.validate import check_scope, checked_change
from sync_server.models import Document

__all__ = [
    "CHECKPOINT_EVERY",
    "MAX_AHEAD",
    "MAX_CHAIN_BYTES",
    "MAX_DELTA_CHAIN",
    "Clock",
    "SyncMessage",
    "answer",
    "latest_version",
    "publish_version",
    "rebase",
    "scopes",
    "snapshot",
]

log = logging.getLogger(__name__)

MAX_DELTA_CHAIN = 50
"""A device further behind than this many versions gets a snapshot instead of the deltas."""
MAX_CHAIN_BYTES = 4 * 1024 * 1024
"""Deltas adding up to more than this (encoded) are replaced by one snapshot."""
CHECKPOINT_EVERY = 64
"""Every this many versions a row also carries the whole document, so a snapshot folds at most
this many deltas however long the history grows."""
MAX_AHEAD = 1_000_000
"""A device claiming to be further ahead than this is refused: a bug or a forged request must not
push every document's version towards the 64-bit limit."""
PUBLISH_ATTEMPTS = 10
_NUMBERS_LOCK_BASE = 0x4C494E4C49_0000  # "LINLI" + document index: PostgreSQL advisory lock keys

Clock = Callable[[], float]
SyncMessage = DocumentDelta | DocumentSnapshot

_documents = cast(Table, Document.__table__)
_warned_unpublished: set[str] = set()


@dataclass(frozen=True)
class _Row:
    """One stored version: the delta from ``from_version``, and maybe the whole document."""

    version: int
    from_version: int
    upserts: dict[str, Any]
    deletes: list[str]
    items: dict[str, Any] | None

    def delta(self, doc: str) -> DocumentDelta:
        return DocumentDelta.model_validate(
            {
                "kind": "delta",
                "doc": doc,
                "from_version": self.from_version,
                "version": self.version,
                "upserts": self.upserts,
                "deletes": self.deletes,
            }
        )


# ------------------------------------------------------------------------------- publishing


def publish_version(
    engine: Engine,
    doc: str,
    *,
    upserts: Mapping[str, Any],
    deletes: Iterable[str] = (),
    scope: str = "",
    if_version: int | None = None,
    clock: Clock = time.time,
) -> int:
    """Store the next version of ``doc`` in ``scope``'s history (``upserts`` replace whole
    items, ``deletes`` remove them) and return its number.

    ``scope`` is the community id for ``residents`` and ``""`` for the other documents
    (:class:`DocumentScopeError` otherwise). With ``if_version``, the version is stored only if
    the history is still at that version (:class:`DocumentChangedError` if not): for a change
    computed from what the document held.

    Safe with several writers and server processes: the history is locked while the new
    version is made (PostgreSQL advisory lock per document and scope; SQLite's write lock), the
    number is taken under a second lock per document (numbers are unique across scopes), the
    table's keys refuse a duplicate and a conflict is retried. Raises
    :class:`DocumentPublishError` for invalid input and :class:`DocumentTooLargeError` when the
    delta or the resulting document would exceed ``MAX_SYNC_BYTES`` (one ``down/sync``
    message): nothing is stored then.
    """
    ups, dels = checked_change(doc, upserts, deletes)
    check_scope(doc, scope)
    where = _name(doc, scope)
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                version = _publish_in(
                    conn,
                    doc,
                    scope,
                    upserts=ups,
                    deletes=dels,
                    now=clock(),
                    rebase=False,
                    if_version=if_version,
                )
        except IntegrityError:  # a writer that does not take the locks got there first
            log.debug("%s: version number taken by another writer (attempt %d)", where, attempt)
            continue
        log.info(
            "%s: version %d published (%d upserts, %d deletes)", where, version, len(ups), len(dels)
        )
        return version
    raise DocumentConflictError(
        f"{where}: other writers took the next version {PUBLISH_ATTEMPTS} times in a row; "
        "nothing was published, publish again"
    )


def _publish_in(
    conn: Connection,
    doc: str,
    scope: str,
    *,
    upserts: dict[str, Any],
    deletes: list[str],
    now: float,
    rebase: bool,
    above: int = 0,
    if_version: int | None = None,
) -> int:
    where = _name(doc, scope)
    _lock_history(conn, doc, scope)
    latest = _latest(conn, doc, scope)
    if rebase and latest > above:
        return latest  # another request moved the history past the device already
    if if_version is not None and latest != if_version:
        raise DocumentChangedError(
            f"{where}: the document is at version {latest}, not {if_version} as the change "
            "assumed; nothing was published, compute the change again"
        )
    items, since_checkpoint = _fold(conn, doc, scope, latest)
    _lock_numbers(conn, doc)  # always after the history's lock: no two writers wait in a cycle
    version = max(_newest(conn, doc), above if rebase else 0) + 1
    if version > MAX_SEQ:
        raise DocumentPublishError(f"{where}: version {version} is past the 64-bit limit")
    row = _Row(version, latest, upserts, deletes, None)
    size = len(encode(row.delta(doc)))
    if size > MAX_SYNC_BYTES:
        raise DocumentTooLargeError(
            f"{where}: this change is {size} bytes as a down/sync delta; at most "
            f"{MAX_SYNC_BYTES} fit one message. Split it into several smaller versions; "
            "nothing was published."
        )
    _apply(items, row)
    size = _snapshot_size(doc, version, items)
    if size > MAX_SYNC_BYTES:
        raise DocumentTooLargeError(
            f"{where}: version {version} would make the whole document {size} bytes; at most "
            f"{MAX_SYNC_BYTES} fit one down/sync snapshot, which new devices need. Remove items "
            "or split the document; nothing was published."
        )
    payload: dict[str, Any] = {"from_version": latest, "upserts": upserts, "deletes": deletes}
    if rebase:
        payload["rebase"] = True
    if since_checkpoint + 1 >= CHECKPOINT_EVERY:
        payload["items"] = items
    conn.execute(
        insert(_documents).values(
            doc=doc, scope=scope, version=version, payload=payload, created=now
        )
    )
    return version


def _name(doc: str, scope: str) -> str:
    """How logs and messages name a history (a community id is not personal data)."""
    return f"{doc}[{scope}]" if scope else doc


def _lock_history(conn: Connection, doc: str, scope: str) -> None:
    """Serialise writers of one history (SQLite: BEGIN IMMEDIATE already holds the write lock
    of the whole database). Two communities lock different keys, so they do not wait for each
    other while folding; a hash collision only makes them take turns."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.blake2b(
            f"{doc}\0{scope}".encode(), digest_size=8, person=b"linli-doc-lock"
        ).digest()
        key = int.from_bytes(digest, "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _lock_numbers(conn: Connection, doc: str) -> None:
    """Serialise taking a version number of one document across its scopes (held until commit,
    only for the last steps of a publish)."""
    if conn.dialect.name == "postgresql":
        key = _NUMBERS_LOCK_BASE + DOCUMENT_NAMES.index(doc)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _snapshot_size(doc: str, version: int, items: dict[str, Any]) -> int:
    message = DocumentSnapshot.model_validate(
        {"kind": "snapshot", "doc": doc, "version": version, "items": items}
    )
    return len(encode(message))


# ------------------------------------------------------------------------------- reading


def latest_version(engine: Engine, doc: str, *, scope: str = "") -> int:
    """The newest version of ``doc`` in ``scope``'s history (0: never published)."""
    _check_doc(doc)
    check_scope(doc, scope)
    with engine.connect() as conn:
        return _latest(conn, doc, scope)


def scopes(engine: Engine, doc: str) -> list[str]:
    """The scopes ``doc`` has a history in, sorted (for ``residents``: the communities that
    published; ``""`` is left out, as it is nobody's community)."""
    _check_doc(doc)
    with engine.connect() as conn:
        found = conn.execute(
            select(_documents.c.scope)
            .where(_documents.c.doc == doc, _documents.c.scope != "")
            .group_by(_documents.c.scope)
            .order_by(_documents.c.scope)
        ).scalars()
        return [str(scope) for scope in found]


def snapshot(
    engine: Engine, doc: str, version: int | None = None, *, scope: str = ""
) -> DocumentSnapshot:
    """The whole of ``doc`` in ``scope`` at ``version`` (default: the newest), folded from its
    deltas.

    :class:`NoSuchVersionError` when that history has no such version here.
    """
    _check_doc(doc)
    check_scope(doc, scope)
    with engine.connect() as conn:
        latest = _latest(conn, doc, scope)
        wanted = latest if version is None else version
        if wanted < 1 or wanted > latest or not _exists(conn, doc, scope, wanted):
            raise NoSuchVersionError(
                f"{_name(doc, scope)} has no version {wanted} on this server "
                f"(newest: {latest or 'none'})"
            )
        items, _ = _fold(conn, doc, scope, wanted)
    return DocumentSnapshot.model_validate(
        {"kind": "snapshot", "doc": doc, "version": wanted, "items": items}
    )


def answer(
    engine: Engine,
    request: SyncRequest,
    *,
    scope: str = "",
    max_deltas: int = MAX_DELTA_CHAIN,
    max_chain_bytes: int = MAX_CHAIN_BYTES,
    clock: Clock = time.time,
) -> list[SyncMessage]:
    """What to send a device that has ``request.version`` of ``request.doc``, from ``scope``'s
    history (the caller decides the scope: the device's community for ``residents``).

    - nothing when it is current (or when this server never published a global document);
    - the deltas from its version to the newest, in order, when there are at most
      ``max_deltas`` and they encode to at most ``max_chain_bytes`` together;
    - otherwise one snapshot of the newest version: a fresh device (version 0), one too far
      behind, or one whose version is not in this history (another community's);
    - a device AHEAD of this history (the database restored from a backup, or a kiosk holding
      a version of another community, which may never have published): the server first
      publishes an empty version above the device's, then sends its snapshot, so the device
      follows the server (and drops another community's records).
    """
    doc, have = request.doc, request.version
    check_scope(doc, scope)
    with engine.connect() as conn:
        latest = _latest(conn, doc, scope)
        if latest == have or (latest == 0 and (have == 0 or not scope)):
            if latest == 0 and have > 0 and doc not in _warned_unpublished:
                _warned_unpublished.add(doc)  # once per process: every device asks again
                log.warning(
                    "%s: a device has version %d but this server never published the document; "
                    "not answering (wrong database?)",
                    doc,
                    have,
                )
            return []
        if 0 < have < latest:
            chain = _chain(conn, doc, scope, have, max_deltas=max_deltas, max_bytes=max_chain_bytes)
            if chain is not None:
                return list(chain)
        newest = _newest(conn, doc)
    if have > latest:
        if have - newest > MAX_AHEAD or have >= MAX_SEQ:
            raise VersionAheadError(
                f"up/sync-req claims version {have} of {doc}, more than {MAX_AHEAD} ahead of "
                f"this server's {newest}; refused"
            )
        latest = rebase(engine, doc, above=have, scope=scope, clock=clock)
    return [snapshot(engine, doc, latest, scope=scope)]


def rebase(
    engine: Engine, doc: str, *, above: int, scope: str = "", clock: Clock = time.time
) -> int:
    """Move ``scope``'s history of ``doc`` to a version above ``above`` with an empty delta
    (content unchanged).

    :func:`answer` does this when a device is ahead. After restoring the database from a
    backup, call it yourself with the highest version devices reported (their ``doc.applied``
    events) BEFORE publishing anything new, so no device mistakes a new version for one it
    already has; for ``residents`` one community is enough, as numbers are shared by all.
    Returns the newest version (unchanged if it is already above ``above``).
    """
    _check_doc(doc)
    check_scope(doc, scope)
    if above < 0:
        raise ValueError(f"above must be a version (>= 0), got {above}")
    where = _name(doc, scope)
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            with engine.begin() as conn:
                version = _publish_in(
                    conn, doc, scope, upserts={}, deletes=[], now=clock(), rebase=True, above=above
                )
        except IntegrityError:
            continue
        log.warning(
            "%s: a device has version %d, beyond this history (another community's version, or "
            "a restored database); the history is at version %d now, so the device follows it",
            where,
            above,
            version,
        )
        return version
    raise DocumentConflictError(f"{where}: could not publish a version above {above}; ask again")


def _in_history(doc: str, scope: str) -> ColumnElement[bool]:
    return (_documents.c.doc == doc) & (_documents.c.scope == scope)


def _chain(
    conn: Connection, doc: str, scope: str, have: int, *, max_deltas: int, max_bytes: int
) -> list[DocumentDelta] | None:
    """The deltas from ``have`` to the newest, or None when a snapshot should go instead."""
    stmt = (
        select(_documents.c.version, _documents.c.payload)
        .where(_in_history(doc, scope), _documents.c.version > have)
        .order_by(_documents.c.version)
        .limit(max_deltas + 1)
    )
    chain: list[DocumentDelta] = []
    total = 0
    expected = have
    result = conn.execute(stmt)
    try:
        for version, payload in result:
            if len(chain) == max_deltas:
                return None
            row = _row(doc, int(version), payload)
            if row.from_version != expected:
                return None  # the device's version is not in this history (or a gap)
            delta = row.delta(doc)
            total += len(encode(delta))
            if total > max_bytes:
                return None
            chain.append(delta)
            expected = row.version
    finally:
        result.close()
    return chain


def _fold(conn: Connection, doc: str, scope: str, version: int) -> tuple[dict[str, Any], int]:
    """The document at ``version`` and how many deltas were folded since the last checkpoint."""
    if version == 0:
        return {}, 0
    stmt = (
        select(_documents.c.version, _documents.c.payload)
        .where(_in_history(doc, scope), _documents.c.version <= version)
        .order_by(_documents.c.version.desc())
        .execution_options(yield_per=16)
    )
    pending: list[_Row] = []
    base: dict[str, Any] = {}
    result = conn.execute(stmt)
    try:
        for number, payload in result:
            row = _row(doc, int(number), payload)
            if row.items is not None:
                base = dict(row.items)
                break
            pending.append(row)
    finally:
        result.close()
    for row in reversed(pending):
        _apply(base, row)
    return base, len(pending)


def _apply(items: dict[str, Any], row: _Row) -> None:
    for key in row.deletes:
        items.pop(key, None)
    items.update(row.upserts)


def _row(doc: str, version: int, payload: Any) -> _Row:
    try:
        items = payload.get("items")
        row = _Row(
            version=version,
            from_version=int(payload["from_version"]),
            upserts=dict(payload["upserts"]),
            deletes=[str(key) for key in payload["deletes"]],
            items=None if items is None else dict(items),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise CorruptDocumentError(
            f"{doc} version {version}: the stored row is not a delta written by "
            f"sync_server.documents ({type(err).__name__}); restore it from a backup"
        ) from err
    if not 0 <= row.from_version < version:
        raise CorruptDocumentError(
            f"{doc} version {version}: stored from_version {row.from_version} is not below it"
        )
    return row


def _latest(conn: Connection, doc: str, scope: str) -> int:
    """The newest version of one history."""
    found = conn.execute(
        select(func.max(_documents.c.version)).where(_in_history(doc, scope))
    ).scalar()
    return 0 if found is None else int(found)


def _newest(conn: Connection, doc: str) -> int:
    """The highest version number of ``doc`` in any scope: the next one is above it."""
    found = conn.execute(
        select(func.max(_documents.c.version)).where(_documents.c.doc == doc)
    ).scalar()
    return 0 if found is None else int(found)


def _exists(conn: Connection, doc: str, scope: str, version: int) -> bool:
    found = conn.execute(
        select(_documents.c.version).where(_in_history(doc, scope), _documents.c.version == version)
    ).first()
    return found is not None


def _check_doc(doc: str) -> None:
    if doc not in DOCUMENT_NAMES:
        raise NoSuchVersionError(
            f"unknown document {doc!r}; the documents are {', '.join(DOCUMENT_NAMES)}"
        )
