"""Versioned documents the server publishes and devices pull over ``up/sync-req``/``down/sync``.

Each version of a document is one row of ``documents``: the delta from the version before it.
:func:`answer` turns a device's request into the deltas it lacks, or one whole snapshot when that
is cheaper or the only way (docs/documents.md). Nothing here knows MQTT except
:class:`DocumentServer`, the consumer's handler, which publishes through a callable it is given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from device.protocol import (
    DOCUMENT_NAMES,
    MAX_SEQ,
    MAX_SYNC_BYTES,
    DocumentDelta,
    DocumentSnapshot,
    MessageError,
    SchemaError,
    SyncRequest,
    encode,
    parse_sync,
    parse_sync_request,
)
from sync_server.errors import ServerError
from sync_server.models import Document

__all__ = [
    "CHECKPOINT_EVERY",
    "MAX_AHEAD",
    "MAX_CHAIN_BYTES",
    "MAX_DELTA_CHAIN",
    "CorruptDocumentError",
    "DocumentConflictError",
    "DocumentPublishError",
    "DocumentServer",
    "DocumentTooLargeError",
    "NoSuchVersionError",
    "Publish",
    "VersionAheadError",
    "answer",
    "latest_version",
    "parse_request",
    "publish_version",
    "rebase",
    "safe_problems",
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
ITEM_KEY_MAX = 256
_LOCK_BASE = 0x4C494E4C49_0000  # "LINLI" + document index: PostgreSQL advisory lock keys

Clock = Callable[[], float]
Publish = Callable[[str, str, bytes], bool]
"""``publish(device, "down/sync", payload) -> bool``: ``Consumer.publish`` fits."""
SyncMessage = DocumentDelta | DocumentSnapshot

_documents = cast(Table, Document.__table__)
_warned_unpublished: set[str] = set()


class DocumentPublishError(ServerError, ValueError):
    """A new version was refused before anything was stored; the message says what to fix."""


class DocumentTooLargeError(DocumentPublishError):
    """The version's delta, or the whole document it produces, would not fit one ``down/sync``."""


class DocumentConflictError(ServerError, RuntimeError):
    """Other writers took every version number tried; publish again."""


class NoSuchVersionError(ServerError, LookupError):
    """The document has no such version on this server."""


class CorruptDocumentError(ServerError, RuntimeError):
    """A stored row is not what this module writes (edited by hand, or another program)."""


class VersionAheadError(MessageError):
    """A device claims a version implausibly far ahead of the server's (refused, not answered)."""


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
    clock: Clock = time.time,
) -> int:
    """Store the next version of ``doc`` (``upserts`` replace whole items, ``deletes`` remove
    them) and return its number.

    Safe with several writers and server processes: versions are unique by the table's primary
    key (``doc``, ``version``), taken under a lock (PostgreSQL advisory lock, SQLite's write
    lock) and retried on a conflict. Raises :class:`DocumentPublishError` for invalid input and
    :class:`DocumentTooLargeError` when the delta or the resulting document would exceed
    ``MAX_SYNC_BYTES`` (one ``down/sync`` message): nothing is stored then.
    """
    ups, dels = _checked_change(doc, upserts, deletes)
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                version = _publish_in(conn, doc, ups, dels, clock(), rebase=False)
        except IntegrityError:  # a writer that does not take the lock got there first
            log.debug("%s: version number taken by another writer (attempt %d)", doc, attempt)
            continue
        log.info(
            "%s: version %d published (%d upserts, %d deletes)", doc, version, len(ups), len(dels)
        )
        return version
    raise DocumentConflictError(
        f"{doc}: other writers took the next version {PUBLISH_ATTEMPTS} times in a row; "
        "nothing was published, publish again"
    )


def _publish_in(
    conn: Connection,
    doc: str,
    upserts: dict[str, Any],
    deletes: list[str],
    now: float,
    *,
    rebase: bool,
    above: int = 0,
) -> int:
    _lock(conn, doc)
    latest = _latest(conn, doc)
    if rebase and latest > above:
        return latest  # another request moved the document past the device already
    version = above + 1 if rebase else latest + 1
    if version > MAX_SEQ:
        raise DocumentPublishError(f"{doc}: version {version} is past the 64-bit limit")
    row = _Row(version, latest, upserts, deletes, None)
    size = len(encode(row.delta(doc)))
    if size > MAX_SYNC_BYTES:
        raise DocumentTooLargeError(
            f"{doc}: this change is {size} bytes as a down/sync delta; at most {MAX_SYNC_BYTES} "
            "fit one message. Split it into several smaller versions; nothing was published."
        )
    items, since_checkpoint = _fold(conn, doc, latest)
    _apply(items, row)
    size = _snapshot_size(doc, version, items)
    if size > MAX_SYNC_BYTES:
        raise DocumentTooLargeError(
            f"{doc}: version {version} would make the whole document {size} bytes; at most "
            f"{MAX_SYNC_BYTES} fit one down/sync snapshot, which new devices need. Remove items "
            "or split the document; nothing was published."
        )
    payload: dict[str, Any] = {"from_version": latest, "upserts": upserts, "deletes": deletes}
    if rebase:
        payload["rebase"] = True
    if since_checkpoint + 1 >= CHECKPOINT_EVERY:
        payload["items"] = items
    conn.execute(insert(_documents).values(doc=doc, version=version, payload=payload, created=now))
    return version


def _checked_change(
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
        _check_residents(ups, dels)
    try:
        json.dumps(ups, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DocumentPublishError(
            f"{doc}: an item is not JSON ({type(err).__name__}); use dicts, lists, strings, "
            "finite numbers, booleans and null"
        ) from None
    # Devices parse with the protocol's rules (sizes apart, checked under the lock): prove this
    # change passes them, or every device would refuse it and ask again forever.
    payload = encode(_Row(1, 0, ups, dels, None).delta(doc))
    if len(payload) <= MAX_SYNC_BYTES:
        try:
            parse_sync(payload)
        except MessageError as err:
            raise DocumentPublishError(f"{doc}: devices would refuse this change: {err}") from None
    return ups, dels


def _check_residents(upserts: dict[str, Any], deletes: list[str]) -> None:
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


def _lock(conn: Connection, doc: str) -> None:
    """Serialise writers of one document (SQLite: BEGIN IMMEDIATE already holds the write lock)."""
    if conn.dialect.name == "postgresql":
        key = _LOCK_BASE + DOCUMENT_NAMES.index(doc)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _snapshot_size(doc: str, version: int, items: dict[str, Any]) -> int:
    message = DocumentSnapshot.model_validate(
        {"kind": "snapshot", "doc": doc, "version": version, "items": items}
    )
    return len(encode(message))


# ------------------------------------------------------------------------------- reading


def latest_version(engine: Engine, doc: str) -> int:
    """The newest version of ``doc`` on this server (0: never published)."""
    _check_doc(doc)
    with engine.connect() as conn:
        return _latest(conn, doc)


def snapshot(engine: Engine, doc: str, version: int | None = None) -> DocumentSnapshot:
    """The whole of ``doc`` at ``version`` (default: the newest), folded from its deltas.

    :class:`NoSuchVersionError` when the document has no such version here.
    """
    _check_doc(doc)
    with engine.connect() as conn:
        latest = _latest(conn, doc)
        wanted = latest if version is None else version
        if wanted < 1 or wanted > latest or not _exists(conn, doc, wanted):
            raise NoSuchVersionError(
                f"{doc} has no version {wanted} on this server (newest: {latest or 'none'})"
            )
        items, _ = _fold(conn, doc, wanted)
    return DocumentSnapshot.model_validate(
        {"kind": "snapshot", "doc": doc, "version": wanted, "items": items}
    )


def answer(
    engine: Engine,
    request: SyncRequest,
    *,
    max_deltas: int = MAX_DELTA_CHAIN,
    max_chain_bytes: int = MAX_CHAIN_BYTES,
    clock: Clock = time.time,
) -> list[SyncMessage]:
    """What to send a device that has ``request.version`` of ``request.doc``.

    - nothing when it is current (or when this server never published the document);
    - the deltas from its version to the newest, in order, when there are at most
      ``max_deltas`` and they encode to at most ``max_chain_bytes`` together;
    - otherwise one snapshot of the newest version: a fresh device (version 0), one too far
      behind, or one whose version is not in this server's history;
    - a device AHEAD of the server (its database restored from a backup): the server first
      publishes an empty version just above the device's, then sends its snapshot, so the
      device follows the server and every device sees the same numbers again.
    """
    doc, have = request.doc, request.version
    with engine.connect() as conn:
        latest = _latest(conn, doc)
        if latest in (have, 0):
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
            chain = _chain(conn, doc, have, max_deltas, max_chain_bytes)
            if chain is not None:
                return list(chain)
    if have > latest:
        if have - latest > MAX_AHEAD or have >= MAX_SEQ:
            raise VersionAheadError(
                f"up/sync-req claims version {have} of {doc}, more than {MAX_AHEAD} ahead of "
                f"this server's {latest}; refused"
            )
        latest = rebase(engine, doc, above=have, clock=clock)
    return [snapshot(engine, doc, latest)]


def rebase(engine: Engine, doc: str, *, above: int, clock: Clock = time.time) -> int:
    """Move ``doc`` to a version above ``above`` with an empty delta (content unchanged).

    :func:`answer` does this when a device is ahead. After restoring the database from a
    backup, call it yourself with the highest version devices reported (their ``doc.applied``
    events) BEFORE publishing anything new, so no device mistakes a new version for one it
    already has. Returns the newest version (unchanged if it is already above ``above``).
    """
    _check_doc(doc)
    if above < 0:
        raise ValueError(f"above must be a version (>= 0), got {above}")
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            with engine.begin() as conn:
                version = _publish_in(conn, doc, {}, [], clock(), rebase=True, above=above)
        except IntegrityError:
            continue
        log.warning(
            "%s: version %d exists beyond this server's history (database restored?); the "
            "document is at version %d now, so devices that had it follow this server",
            doc,
            above,
            version,
        )
        return version
    raise DocumentConflictError(f"{doc}: could not publish a version above {above}; ask again")


def _chain(
    conn: Connection, doc: str, have: int, max_deltas: int, max_bytes: int
) -> list[DocumentDelta] | None:
    """The deltas from ``have`` to the newest, or None when a snapshot should go instead."""
    stmt = (
        select(_documents.c.version, _documents.c.payload)
        .where(_documents.c.doc == doc, _documents.c.version > have)
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


def _fold(conn: Connection, doc: str, version: int) -> tuple[dict[str, Any], int]:
    """The document at ``version`` and how many deltas were folded since the last checkpoint."""
    if version == 0:
        return {}, 0
    stmt = (
        select(_documents.c.version, _documents.c.payload)
        .where(_documents.c.doc == doc, _documents.c.version <= version)
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


def _latest(conn: Connection, doc: str) -> int:
    found = conn.execute(
        select(func.max(_documents.c.version)).where(_documents.c.doc == doc)
    ).scalar()
    return 0 if found is None else int(found)


def _exists(conn: Connection, doc: str, version: int) -> bool:
    found = conn.execute(
        select(_documents.c.version).where(_documents.c.doc == doc, _documents.c.version == version)
    ).first()
    return found is not None


def _check_doc(doc: str) -> None:
    if doc not in DOCUMENT_NAMES:
        raise NoSuchVersionError(
            f"unknown document {doc!r}; the documents are {', '.join(DOCUMENT_NAMES)}"
        )


# ------------------------------------------------------------------------------- MQTT handler


class DocumentServer:
    """The consumer's ``up/sync-req`` handler: answers each request on the device's ``down/sync``.

    ``publish`` is ``Consumer.publish`` (or anything with its ``(device, suffix, payload)``
    shape). Register with ``consumer.add_handler("up/sync-req", server.handle_request)``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        publish: Publish,
        max_deltas: int = MAX_DELTA_CHAIN,
        max_chain_bytes: int = MAX_CHAIN_BYTES,
        clock: Clock = time.time,
    ) -> None:
        if max_deltas < 1 or max_chain_bytes < 1:
            raise ValueError("max_deltas and max_chain_bytes must be at least 1")
        self._engine = engine
        self._publish = publish
        self._max_deltas = max_deltas
        self._max_chain_bytes = max_chain_bytes
        self._clock = clock

    def handle_request(self, device: str, msg: mqtt.MQTTMessage) -> None:
        """Parse, answer and publish; a :class:`~device.protocol.MessageError` refuses the payload.

        Database errors propagate (the consumer treats them as a storage failure); a corrupt
        stored row is logged here instead, so one bad row cannot take the consumer offline.
        """
        request = parse_request(bytes(msg.payload))
        try:
            messages = answer(
                self._engine,
                request,
                max_deltas=self._max_deltas,
                max_chain_bytes=self._max_chain_bytes,
                clock=self._clock,
            )
        except CorruptDocumentError as err:
            log.error("device %s: cannot answer for %s: %s", device, request.doc, err)
            return
        for message in messages:
            payload = encode(message)
            if len(payload) > MAX_SYNC_BYTES:  # publish_version keeps this from happening
                log.error(
                    "device %s: %s version %d is %d bytes, over the down/sync limit; not sent",
                    device,
                    request.doc,
                    message.version,
                    len(payload),
                )
                return
            if not self._publish(device, "down/sync", payload):
                log.warning(
                    "device %s: not connected to the broker; %s not sent (the device asks again)",
                    device,
                    request.doc,
                )
                return
        if messages:
            first = messages[0]
            kind = "snapshot" if isinstance(first, DocumentSnapshot) else f"{len(messages)} deltas"
            log.info(
                "device %s: %s %d -> %d sent as %s",
                device,
                request.doc,
                request.version,
                messages[-1].version,
                kind,
            )


def parse_request(payload: bytes) -> SyncRequest:
    """:func:`device.protocol.parse_sync_request` with an error message that names fields only.

    The protocol's own message may quote an unexpected field name, which is payload text.
    """
    try:
        return parse_sync_request(payload)
    except SchemaError as err:
        raise SchemaError(f"up/sync-req payload has the wrong shape: {safe_problems(err)}") from err


_FIELD_NAMES = frozenset(
    {"doc", "version", "kind", "from_version", "upserts", "deletes", "items", "delta", "snapshot"}
)


def safe_problems(err: SchemaError) -> str:
    """Where and what kind of problem, from the validation error behind ``err``, with every
    location part that is not one of the protocol's field names replaced by ``<key>``."""
    cause = err.__cause__
    if not isinstance(cause, ValidationError):
        return "not a sync message"
    parts = []
    for problem in cause.errors(include_url=False, include_input=False, include_context=False)[:5]:
        where = ".".join(
            str(p) if isinstance(p, int) or p in _FIELD_NAMES else "<key>" for p in problem["loc"]
        )
        parts.append(f"{where or '(message)'}: {problem['type']}")
    more = cause.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
