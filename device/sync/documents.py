"""The device side of versioned documents: ask the server for what is newer than the store's
versions (``up/sync-req``), apply what arrives on ``down/sync`` all or nothing (docs/documents.md).

Each delta or snapshot is applied in one store transaction together with its ``doc.applied``
outbox event, so a process killed half way through keeps the version it had, and asks for the
rest on its next connect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from device.clock import SYSTEM_CLOCK, Clock
from device.protocol import (
    DocumentDelta,
    DocumentSnapshot,
    MessageError,
    SchemaError,
    SyncRequest,
    encode,
    parse_sync,
)
from device.store import (
    DOCUMENTS,
    DocumentError,
    DocumentVersionError,
    StaleDocumentError,
    Store,
    StoreError,
    UnknownDocumentError,
)
from device.sync.agent import SyncAgent
from device.sync.errors import SyncError

__all__ = [
    "DOC_APPLIED_EVENT",
    "REREQUEST_INTERVAL_S",
    "DocumentSync",
    "DocumentSyncStats",
]

log = logging.getLogger(__name__)

DOC_APPLIED_EVENT = "doc.applied"
"""Outbox event ``{doc, version}`` recorded in the transaction that applies a version."""
REREQUEST_INTERVAL_S = 5.0
"""A delta that does not fit triggers at most one new request per document and version in this
time, so a confused stream cannot make the device flood the server."""

_FIELD_NAMES = frozenset(
    {"doc", "version", "kind", "from_version", "upserts", "deletes", "items", "delta", "snapshot"}
)


@dataclass(frozen=True)
class DocumentSyncStats:
    """Counters since construction, for the status page and tests."""

    requests: int  # up/sync-req sent
    deltas: int  # deltas applied
    snapshots: int  # snapshots applied
    ignored: int  # messages for a version the store already has (or older)
    refused: int  # malformed, for a document not synced here, or with an invalid item
    rerequests: int  # requests sent because a delta did not start at the store's version
    failed: int  # store errors while applying (tried again at the next request)


class DocumentSync:
    """Keeps ``store``'s documents ``docs`` up to date through ``agent``.

    Call :meth:`attach` before ``agent.start()``: it handles ``down/sync`` and asks for every
    document after each connect. Call :meth:`request` from a timer of your own to also pick up
    versions published while the device stays connected (the server does not push).
    """

    def __init__(
        self,
        store: Store,
        agent: SyncAgent,
        *,
        docs: Iterable[str] = DOCUMENTS,
        clock: Clock = SYSTEM_CLOCK,
        rerequest_interval_s: float = REREQUEST_INTERVAL_S,
    ) -> None:
        self._docs = tuple(dict.fromkeys(docs))
        for doc in self._docs:
            if doc not in DOCUMENTS:
                raise UnknownDocumentError(
                    f"unknown document {doc!r} in docs; the store keeps {', '.join(DOCUMENTS)}"
                )
        if not self._docs:
            raise ValueError("docs is empty: name at least one document to sync")
        self._store = store
        self._agent = agent
        self._clock = clock
        self._interval = rerequest_interval_s
        self._lock = threading.Lock()
        self._asked: dict[str, tuple[int, float]] = {}  # doc -> (version, monotonic time)
        self._attached = False
        self._counts = dict.fromkeys(
            ("requests", "deltas", "snapshots", "ignored", "refused", "rerequests", "failed"), 0
        )

    def __repr__(self) -> str:
        return f"DocumentSync({self._agent.device_id!r}, docs={list(self._docs)})"

    @property
    def docs(self) -> tuple[str, ...]:
        return self._docs

    def attach(self) -> None:
        """Register the ``down/sync`` handler and the connect hook (before ``agent.start()``)."""
        if self._attached:
            raise SyncError("this DocumentSync is already attached to its agent")
        self._agent.add_handler("down/sync", self.handle)
        self._agent.add_connect_hook(self._on_connect)
        self._attached = True

    def request(self, doc: str | None = None) -> int:
        """Send ``up/sync-req`` with the store's version of ``doc`` (default: every document).

        Returns how many requests went out: 0 when the agent is offline (the next connect asks
        anyway). Safe from any thread.
        """
        if doc is not None and doc not in self._docs:
            raise UnknownDocumentError(
                f"document {doc!r} is not synced here; synced: {', '.join(self._docs)}"
            )
        sent = 0
        for name in self._docs if doc is None else (doc,):
            if self._send(name, self._store.documents.version(name)):
                sent += 1
        return sent

    def versions(self) -> dict[str, int]:
        """The store's version of every synced document (0: never synced)."""
        return {doc: self._store.documents.version(doc) for doc in self._docs}

    def stats(self) -> DocumentSyncStats:
        with self._lock:
            return DocumentSyncStats(**self._counts)

    def handle(self, msg: mqtt.MQTTMessage) -> None:
        """The ``down/sync`` handler (agent thread): check, then apply or ignore one message.

        Never raises for what a message contains; log lines name the document and versions
        only, never payload bytes.
        """
        payload = bytes(msg.payload)
        try:
            message = parse_sync(payload)
        except MessageError as err:
            log.warning("refused a down/sync message of %d bytes: %s", len(payload), _describe(err))
            self._count("refused")
            return
        if message.doc not in self._docs:
            log.warning("refused a down/sync message for %s: not synced here", message.doc)
            self._count("refused")
            return
        try:
            self._apply(message)
        except StaleDocumentError:
            log.debug("%s version %d: already there; ignored", message.doc, message.version)
            self._count("ignored")
        except DocumentVersionError as err:
            self._mismatch(message, err.current)
        except DocumentError as err:
            # An invalid item: asking again would bring the same one; the next request retries.
            log.error(
                "%s version %d refused, nothing applied: %s", message.doc, message.version, err
            )
            self._count("refused")
        except StoreError as err:
            log.warning(
                "%s version %d not applied (asked again at the next request): %s",
                message.doc,
                message.version,
                err,
            )
            self._count("failed")

    # ------------------------------------------------------------------------- internals

    def _on_connect(self) -> None:
        with self._lock:
            self._asked.clear()
        try:
            self.request()
        except StoreError as err:
            log.warning("could not read document versions to ask for updates: %s", err)

    def _send(self, doc: str, version: int) -> bool:
        ok = self._agent.publish(
            "up/sync-req", encode(SyncRequest.model_validate({"doc": doc, "version": version}))
        )
        if ok:
            self._count("requests")
            log.debug("asked for %s newer than version %d", doc, version)
        return ok

    def _apply(self, message: DocumentDelta | DocumentSnapshot) -> None:
        doc, documents = message.doc, self._store.documents
        current = documents.version(doc)
        if message.version <= current:
            raise StaleDocumentError(
                f"{doc} is at {current}", doc=doc, current=current, from_version=message.version
            )
        with self._store.transaction() as tx:
            if isinstance(message, DocumentDelta):
                documents.apply_delta(
                    doc,
                    message.from_version,
                    message.version,
                    message.upserts,
                    message.deletes,
                    tx=tx,
                )
            else:
                documents.apply_snapshot(doc, message.version, message.items, tx=tx)
            tx.emit(DOC_APPLIED_EVENT, {"doc": doc, "version": message.version})
        self._count("deltas" if isinstance(message, DocumentDelta) else "snapshots")
        self._agent.notify()

    def _mismatch(self, message: DocumentDelta | DocumentSnapshot, current: int) -> None:
        """A delta that does not start at the store's version: ask for ``doc`` again, once."""
        doc = message.doc
        now = self._clock.monotonic()
        with self._lock:
            last = self._asked.get(doc)
            if last is not None and last[0] == current and now - last[1] < self._interval:
                log.debug("%s: delta does not fit version %d; already asked again", doc, current)
                return
            self._asked[doc] = (current, now)
        from_version = message.from_version if isinstance(message, DocumentDelta) else "?"
        log.info(
            "%s: delta %s -> %d does not start at this device's version %d; asking again",
            doc,
            from_version,
            message.version,
            current,
        )
        if self._send(doc, current):
            self._count("rerequests")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def _describe(err: MessageError) -> str:
    """The refusal reason without payload text (field names and problem kinds only)."""
    cause = err.__cause__
    if not isinstance(err, SchemaError) or not isinstance(cause, ValidationError):
        return str(err)  # size, UTF-8 and JSON errors carry positions, not content
    parts = []
    for problem in cause.errors(include_url=False, include_input=False, include_context=False)[:5]:
        where = ".".join(
            str(p) if isinstance(p, int) or p in _FIELD_NAMES else "<key>" for p in problem["loc"]
        )
        parts.append(f"{where or '(message)'}: {problem['type']}")
    more = cause.error_count() - len(parts)
    return (
        "down/sync payload has the wrong shape: "
        + "; ".join(parts)
        + (f" (and {more} more)" if more > 0 else "")
    )
