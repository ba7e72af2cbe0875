"""The consumer's ``up/sync-req`` handler: which history a device reads, and the answer on its
``down/sync``.

Global documents are answered from their one history. ``residents`` is answered from the
requesting kiosk's community (its ``service_points`` row); a device that is not a registered,
unrevoked kiosk gets nothing, never another community's or a global history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, cast

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy import Engine, Table, select

from device.protocol import (
    MAX_SYNC_BYTES,
    DocumentSnapshot,
    SchemaError,
    SyncRequest,
    encode,
    parse_sync_request,
)
from sync_server.documents.errors import CorruptDocumentError, DocumentScopeError
from sync_server.documents.history import MAX_CHAIN_BYTES, MAX_DELTA_CHAIN, Clock, answer
from sync_server.documents.validate import SCOPED_DOCUMENTS, check_scope
from sync_server.domain_models import ServicePoint

__all__ = [
    "NOT_A_KIOSK",
    "NO_SERVICE_POINT",
    "REVOKED",
    "DocumentServer",
    "Publish",
    "kiosk_community",
    "parse_request",
    "safe_problems",
]

log = logging.getLogger(__name__)

Publish = Callable[[str, str, bytes], bool]
"""``publish(device, "down/sync", payload) -> bool``: ``Consumer.publish`` fits."""

NO_SERVICE_POINT: Final = "has no service point (register it as a kiosk of its community)"
REVOKED: Final = "is revoked"
NOT_A_KIOSK: Final = "is not a kiosk (only kiosks hold resident records)"
BAD_AREA_ID: Final = "serves an area id that cannot name a community (blanks around it?)"
_LOG_LEVELS: Final = {
    NO_SERVICE_POINT: logging.WARNING,
    REVOKED: logging.WARNING,
    BAD_AREA_ID: logging.ERROR,
}
"""A locker asking for residents is expected (its daemon syncs every document): INFO."""

_points = cast(Table, ServicePoint.__table__)


def kiosk_community(engine: Engine, device: str) -> tuple[str | None, str]:
    """The community whose ``residents`` ``device`` receives, or None and why not.

    Only a kiosk with a ``service_points`` row that is not revoked has one (its ``area_id``).
    The reason is :data:`NO_SERVICE_POINT`, :data:`REVOKED` or :data:`NOT_A_KIOSK` (``""``
    with a community).
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(_points.c.kind, _points.c.area_id, _points.c.revoked_at).where(
                _points.c.device_id == device
            )
        ).first()
    if row is None:
        return None, NO_SERVICE_POINT
    if row.revoked_at is not None:
        return None, REVOKED
    if row.kind != "kiosk":
        return None, NOT_A_KIOSK
    return str(row.area_id), ""


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
        self._refused: set[tuple[str, str]] = set()
        self._refused_lock = threading.Lock()

    def handle_request(self, device: str, msg: mqtt.MQTTMessage) -> None:
        """Parse, answer and publish; a :class:`~device.protocol.MessageError` refuses the payload.

        Database errors propagate (the consumer treats them as a storage failure); a corrupt
        stored row is logged here instead, so one bad row cannot take the consumer offline.
        """
        request = parse_request(bytes(msg.payload))
        scope = self._scope(device, request.doc)
        if scope is None:
            return
        try:
            messages = answer(
                self._engine,
                request,
                scope=scope,
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
                f"{request.doc}[{scope}]" if scope else request.doc,
                request.version,
                messages[-1].version,
                kind,
            )

    def _scope(self, device: str, doc: str) -> str | None:
        """The history ``device`` reads ``doc`` from; None (logged once per device and reason):
        it gets nothing."""
        if doc not in SCOPED_DOCUMENTS:
            return ""
        community, why = kiosk_community(self._engine, device)
        if community is not None:
            try:
                check_scope(doc, community)
            except DocumentScopeError:  # an area id with blanks around it: fix the row
                why = BAD_AREA_ID
            else:
                return community
        with self._refused_lock:
            first = (device, why) not in self._refused
            self._refused.add((device, why))
        if first:  # the device asks on every connect: say it once
            level = _LOG_LEVELS.get(why, logging.INFO)
            log.log(level, "device %s: %s not answered: the device %s", device, doc, why)
        return None


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
