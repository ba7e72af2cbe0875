"""The server's MQTT side: consume every device's ``up/#`` through a shared subscription, store
events durably and exactly once, then ``down/ack`` them; track online state (docs/server.md).

A message is acknowledged to the broker (PUBACK, paho ``manual_ack``) only after the database
commit that stores it, and ``down/ack`` is published only after that commit too. A storage error
acknowledges nothing: the consumer leaves the broker and waits for the database; the device
publishes everything unacked again after its ``ack_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import random
import select as selectmod
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from device.mqtt_io import PublishHandOff, set_no_delay
from device.protocol import (
    MAX_SEQ,
    TOPIC_ROOT,
    Ack,
    EventBatch,
    MessageError,
    OversizeError,
    SchemaError,
    encode,
    topic,
    valid_device_id,
)
from sync_server.errors import DeviceMismatchError, ServerError
from sync_server.ingest import BatchResult, Projector, ingest_batches, record_state
from sync_server.models import Device
from sync_server.wire import WireBatch, parse_events_fast

__all__ = [
    "MAX_STATE_BYTES",
    "BrokerSettings",
    "Consumer",
    "ConsumerClosedError",
    "ConsumerConfigError",
    "ConsumerHealth",
    "ServerHandler",
    "StateMessage",
    "parse_state",
]

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 4096
LOOP_TIMEOUT_S = 0.05
CONNACK_TIMEOUT_S = 10.0
GROUP_MAX_BATCHES = 64
"""At most this many ``up/events`` messages are stored in one transaction (group commit)."""
GROUP_MAX_EVENTS = 20_000
RECEIVE_MAXIMUM = 128
"""MQTT v5 Receive Maximum: unacknowledged messages the broker may have out to this consumer,
which is what lets a group form while the previous one commits."""

ServerHandler = Callable[[str, mqtt.MQTTMessage], None]
"""Called in the consumer's thread with ``(device id, message)`` for ``up/cmd-result``,
``up/sync-req`` or ``up/rpc``. Raise a ``device.protocol.MessageError`` to refuse the message (it
is logged and acknowledged); any other exception is a storage failure (nothing acknowledged, the
consumer waits for the database)."""

HANDLER_TOPICS = ("up/cmd-result", "up/sync-req", "up/rpc")
DOWN_TOPICS = ("down/cmd", "down/sync", "down/rpc")

ConsumerState = Literal["stopped", "connecting", "connected", "backoff", "waiting_for_database"]


class ConsumerConfigError(ServerError, ValueError):
    """The consumer's broker settings cannot work (CA file, password)."""


class ConsumerClosedError(ServerError, RuntimeError):
    """``start()`` after ``stop()``: make a new Consumer."""


class _StorageFailed(ServerError, RuntimeError):
    """The database refused a write; nothing of the message may be acknowledged."""


@dataclass(frozen=True)
class _Received:
    """A parsed ``up/events`` message waiting for its group's commit (then PUBACK)."""

    mid: int
    qos: int
    batch: EventBatch | WireBatch


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how long it keeps the consumer's session while it is away.

    ``session_expiry_s = 0`` (default) means a clean session per connection. A kept session would
    let the broker redeliver what a failed database left unacked, but Mosquitto goes on handing a
    disconnected share-group member its turn of every message until the session expires, which
    stalls devices after a server crash; the device's resend covers the loss instead.
    """

    host: str = "127.0.0.1"
    port: int = 8883
    keepalive_s: int = 30
    session_expiry_s: int = 0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class ConsumerHealth:
    """What ``health()`` reports: state, counters since start, and the last problem."""

    state: ConsumerState
    connected: bool
    client_id: str
    batches: int
    stored: int
    duplicates: int
    acks_sent: int
    connects: int  # successful CONNACKs since start: more than one means the link was lost
    states: int
    rejected: int
    storage_errors: int
    last_error: str | None
    last_message_at: float | None


class StateMessage(BaseModel):
    """``up/state``: ``{online, boot, at?}`` (``at`` may be missing); extra health fields kept."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)

    online: bool
    boot: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    at: Annotated[float, Field(ge=0)] | None = None


def parse_state(payload: bytes) -> StateMessage:
    """Validate an ``up/state`` payload (``MessageError`` subclasses, never echoing values)."""
    # Reuse the protocol's loader rules (size, UTF-8, JSON, no NaN) through a one-off model.
    if len(payload) > MAX_STATE_BYTES:
        raise OversizeError(
            f"up/state payload is {len(payload)} bytes; at most {MAX_STATE_BYTES} allowed"
        )
    try:
        return StateMessage.model_validate_json(payload)
    except ValidationError as err:
        kinds = {problem["type"] for problem in err.errors(include_input=False)}
        if "json_invalid" in kinds:
            raise MessageError("up/state payload is not JSON") from err
        where = "; ".join(
            ".".join(str(p) for p in problem["loc"]) + ": " + problem["msg"]
            for problem in err.errors(include_url=False, include_input=False)[:5]
        )
        raise SchemaError(f"up/state payload has the wrong shape: {where}") from err


def _split_topic(name: str) -> tuple[str, str] | None:
    """``linli/v1/dev/{id}/up/{suffix...}`` -> ``(id, "up/suffix")``; None when not ours."""
    root = TOPIC_ROOT + "/"
    if not name.startswith(root):
        return None
    device, _, rest = name[len(root) :].partition("/")
    if not valid_device_id(device) or not rest.startswith("up/"):
        return None
    return device, rest


def _default_client_id() -> str:
    # Unique per process: two server processes with one client id would take each other's
    # session over in a loop.
    return f"linli-server-{socket.gethostname()[:32]}-{os.getpid()}"


class Consumer:
    """Consumes ``up/#`` for every device with the server's broker account (docs/server.md).

    One thread of its own owns the paho client; ``start()``/``stop()`` from any thread.
    """

    def __init__(
        self,
        engine: Engine,
        broker: BrokerSettings,
        *,
        user: str,
        password: str,
        ca_file: str | Path,
        share_group: str = "linli",
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        projector: Projector | None = None,
        on_effects: Callable[[Sequence[Any]], None] | None = None,
    ) -> None:
        if not password:
            raise ConsumerConfigError("the broker password is empty; give the server account's")
        if 0 < broker.session_expiry_s <= broker.backoff_max_s:
            raise ConsumerConfigError("session_expiry_s must be 0 or longer than backoff_max_s")
        self._engine = engine
        self._projector = projector
        self._on_effects = on_effects
        self._broker = broker
        self._user = user
        self._password = password
        self._tls = _tls_context(str(ca_file))
        self._subscription = f"$share/{share_group}/{TOPIC_ROOT}/+/up/#"
        self.client_id = client_id or _default_client_id()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._state: ConsumerState = "stopped"
        self._client: mqtt.Client | None = None
        self._connected = False
        self._session_over = False
        self._storage_failed = False
        self._failures = 0
        self._counts = dict.fromkeys(
            (
                "batches",
                "stored",
                "duplicates",
                "acks_sent",
                "connects",
                "states",
                "rejected",
                "storage",
            ),
            0,
        )
        self._last_error: str | None = None
        self._last_message_at: float | None = None
        self._handlers: dict[str, ServerHandler] = {}
        self._handoff = PublishHandOff()
        self._group: list[_Received] = []
        self._group_events = 0

    def __repr__(self) -> str:
        return f"Consumer(client_id={self.client_id!r}, state={self._state!r})"

    def __enter__(self) -> Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public API -------------------------------------------------------------------------

    def start(self) -> None:
        """Run in a daemon thread of its own (returns at once; see ``health().connected``)."""
        if self._closed:
            raise ConsumerClosedError("this consumer was stopped; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="linli-consumer", daemon=True)
            self._thread.start()

    def run(self) -> None:
        """Consume in the calling thread until ``stop()``."""
        self._handoff.claim()
        log.info("consumer %s: starting, subscribing %s", self.client_id, self._subscription)
        while not self._stop.is_set():
            if self._storage_failed and not self._database_ok():
                self._wait("waiting_for_database")
                continue
            self._storage_failed = False
            self._session()
            if not self._stop.is_set():
                self._wait("backoff")
        self._state = "stopped"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect cleanly and end the thread; safe twice."""
        self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._state = "stopped"

    close = stop

    def add_handler(self, suffix: str, handler: ServerHandler) -> None:
        """Handle ``up/cmd-result``, ``up/sync-req`` or ``up/rpc`` (register before start)."""
        if suffix not in HANDLER_TOPICS:
            raise ValueError(f"no handler topic {suffix!r}; known: {', '.join(HANDLER_TOPICS)}")
        if self._thread is not None:
            raise ServerError("add handlers before start()")
        self._handlers[suffix] = handler

    def publish(
        self,
        device: str,
        suffix: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        qos: int = 1,
        response_topic: str | None = None,
    ) -> bool:
        """Publish on ``device``'s ``down/cmd``, ``down/sync`` or ``down/rpc`` (or, for an rpc
        answer, on ``response_topic``, which must be that device's ``down/rpc``).

        Safe from any thread: from another thread the message is handed to the consumer's
        thread, which sends it within ``LOOP_TIMEOUT_S``; one handed over as the connection
        drops is discarded. Returns False when not connected (nothing queued).
        """
        name = topic(device, suffix)
        if suffix not in DOWN_TOPICS:
            raise ValueError(f"cannot publish on {suffix!r}; allowed: {', '.join(DOWN_TOPICS)}")
        if response_topic is not None:
            if response_topic != name:
                raise ValueError("a response topic must be the device's own down/ topic")
            name = response_topic
        client = self._client
        if client is None or not self._connected:
            return False
        return self._handoff.publish(client, name, payload, properties=properties, qos=qos)

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> ConsumerHealth:
        with self._lock:
            counts = dict(self._counts)
        return ConsumerHealth(
            state=self._state,
            connected=self._connected,
            client_id=self.client_id,
            batches=counts["batches"],
            stored=counts["stored"],
            duplicates=counts["duplicates"],
            acks_sent=counts["acks_sent"],
            connects=counts["connects"],
            states=counts["states"],
            rejected=counts["rejected"],
            storage_errors=counts["storage"],
            last_error=self._last_error,
            last_message_at=self._last_message_at,
        )

    # -- connection -------------------------------------------------------------------------

    def _wait(self, state: ConsumerState) -> None:
        self._state = state
        ceiling = min(
            self._broker.backoff_max_s, self._broker.backoff_min_s * 2 ** min(self._failures, 20)
        )
        self._failures += 1
        self._stop.wait(self._rng.uniform(ceiling / 2, ceiling))

    def _database_ok(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as err:
            self._note_error(f"database unavailable: {type(err).__name__}")
            return False
        log.warning("consumer %s: the database answers again; reconnecting", self.client_id)
        return True

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(self._user, self._password)
        client.tls_set_context(self._tls)
        client.connect_timeout = CONNACK_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _session(self) -> None:
        """One connection, from CONNECT to its end (stop, broker gone, or storage failure)."""
        self._handoff.drop_pending()  # a publish() racing the end of the last connection
        self._state = "connecting"
        self._session_over = False
        client = self._new_client()
        self._client = client
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._broker.session_expiry_s
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        try:
            client.connect(
                self._broker.host,
                self._broker.port,
                keepalive=self._broker.keepalive_s,
                clean_start=self._broker.session_expiry_s == 0,
                properties=properties,
            )
        except (OSError, ssl.SSLError) as err:
            self._note_error(f"cannot connect to {self._broker.host}:{self._broker.port}: {err}")
            self._client = None
            return
        set_no_delay(client)
        try:
            while not self._stop.is_set() and not self._session_over:
                if self._storage_failed:
                    log.warning(
                        "consumer %s: leaving the broker until the database answers; "
                        "nothing unstored was acknowledged",
                        self.client_id,
                    )
                    break
                waiting = bool(self._group)
                if client.loop(timeout=0.0 if waiting else LOOP_TIMEOUT_S) != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self._group and not _more_to_read(client):
                    self._flush(client)
                if self._connected:
                    self._handoff.send_pending(client)
        finally:
            if self._group and not self._storage_failed:
                self._flush(client)  # stored even if the acks can no longer be sent
            self._group.clear()
            self._group_events = 0
            if client.is_connected():
                client.disconnect(properties=self._goodbye_properties())
                client.loop(timeout=LOOP_TIMEOUT_S)
            self._connected = False
            self._client = None
            self._handoff.drop_pending()

    def _goodbye_properties(self) -> Properties | None:
        """On ``stop()`` end the session: a stopped member of the share group that keeps its
        session would go on receiving (and holding) its turn of every device's messages."""
        if not self._stop.is_set() or self._broker.session_expiry_s == 0:
            return None  # storage failure: keep the session and its unacked messages
        properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0
        return properties

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: Any,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87):
                hint = " -- check the server account's user name and password"
            self._note_error(f"broker refused the connection: {reason}{hint}")
            self._session_over = True
            return
        client.subscribe(self._subscription, qos=1)
        self._connected = True
        with self._lock:
            self._counts["connects"] += 1
        self._state = "connected"
        if self._failures:
            log.warning(
                "consumer %s: connected after %d failed attempts", self.client_id, self._failures
            )
        else:
            log.info(
                "consumer %s: connected (session present: %s)",
                self.client_id,
                getattr(flags, "session_present", False),
            )
        self._failures = 0
        self._last_error = None

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected = False
        self._session_over = True
        if not self._stop.is_set() and not self._storage_failed:
            self._note_error(f"connection lost: {reason}")

    def _note_error(self, message: str) -> None:
        if message != self._last_error:
            log.warning("consumer %s: %s; retrying with backoff", self.client_id, message)
        else:
            log.debug("consumer %s: %s (again)", self.client_id, message)
        self._last_error = message

    # -- messages ---------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._storage_failed:
            return  # not acked: redelivered from the session after the database is back
        self._last_message_at = self._clock()
        try:
            queued = self._dispatch(client, message)
        except _StorageFailed:
            return
        if not queued and message.qos > 0:
            client.ack(message.mid, message.qos)

    def _dispatch(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> bool:
        """Handle ``message``; True when it joined the group (acked after the group commits)."""
        where = _split_topic(message.topic)
        if where is None:
            self._reject("?", "message on a topic outside linli/v1/dev/{id}/up/", None)
            return False
        device, suffix = where
        if suffix == "up/events":
            return self._on_events(client, device, message)
        if suffix == "up/state":
            self._on_state(device, bytes(message.payload))
        elif suffix in HANDLER_TOPICS:
            self._on_handled(device, suffix, message)
        else:
            self._reject(device, f"unknown topic suffix {suffix[:64]!r}", None)
        return False

    def _reject(self, device: str, why: str, err: Exception | None) -> None:
        # The payload is never logged: it may carry personal data.
        with self._lock:
            self._counts["rejected"] += 1
        detail = f": {err}" if err is not None else ""
        log.warning("device %s: message refused (%s)%s", device, why, detail)

    def _storage(self, device: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except (MessageError, DeviceMismatchError):
            raise
        except Exception as err:  # any failure must leave the message unacked
            with self._lock:
                self._counts["storage"] += 1
            self._storage_failed = True
            self._last_error = f"storage failed: {type(err).__name__}"
            log.error(
                "device %s: storing failed (%s: %s); nothing acknowledged, the message "
                "will be delivered again",
                device,
                type(err).__name__,
                str(err).splitlines()[0][:200] if str(err) else "",
            )
            raise _StorageFailed(str(err)) from err

    def _on_events(self, client: mqtt.Client, device: str, message: mqtt.MQTTMessage) -> bool:
        try:
            batch = parse_events_fast(bytes(message.payload))
        except MessageError as err:
            self._reject(device, "up/events", err)
            return False
        if batch.device != device:
            self._reject(device, "up/events names another device", None)
            return False
        self._group.append(_Received(message.mid, message.qos, batch))
        self._group_events += len(batch.events)
        if len(self._group) >= GROUP_MAX_BATCHES or self._group_events >= GROUP_MAX_EVENTS:
            self._flush(client)
        return True

    def _flush(self, client: mqtt.Client) -> None:
        """Store the group in one transaction, then PUBACK each message and send each device
        its newest ack. A storage failure acknowledges none of them."""
        group, self._group, self._group_events = self._group, [], 0
        devices = sorted({item.batch.device for item in group})
        try:
            results: list[BatchResult] = self._storage(
                ",".join(devices)[:200],
                lambda: ingest_batches(
                    self._engine,
                    [item.batch for item in group],
                    clock=self._clock,
                    projector=self._projector,
                ),
            )
        except _StorageFailed:
            return
        for item in group:
            if item.qos > 0:
                client.ack(item.mid, item.qos)
        acks: dict[str, int] = {}
        for result in results:
            acks[result.device] = max(acks.get(result.device, 0), result.ack)
        with self._lock:
            self._counts["batches"] += len(results)
            self._counts["stored"] += sum(result.stored for result in results)
            self._counts["duplicates"] += sum(result.duplicates for result in results)
        for device, ack in acks.items():
            if ack > 0:
                # Also for an all-duplicate batch: the device may have lost the earlier ack.
                client.publish(topic(device, "down/ack"), encode(Ack(seq=ack)), qos=1)
                with self._lock:
                    self._counts["acks_sent"] += 1
        effects = [effect for result in results for effect in result.effects]
        if effects and self._on_effects is not None:
            try:
                self._on_effects(effects)
            except Exception:  # an effect (a notification) must never stop ingest
                log.exception("acting on %d projected effects failed", len(effects))

    def _on_handled(self, device: str, suffix: str, message: mqtt.MQTTMessage) -> None:
        handler = self._handlers.get(suffix)
        if handler is None:
            log.debug("device %s: nothing handles %s in this server; dropped", device, suffix)
            return
        try:
            self._storage(device, lambda: handler(device, message))
        except (MessageError, DeviceMismatchError) as err:
            self._reject(device, suffix, err)

    def _on_state(self, device: str, payload: bytes) -> None:
        try:
            state = parse_state(payload)
        except MessageError as err:
            self._reject(device, "up/state", err)
            return
        at = state.at if state.at is not None else self._will_at(device, state.boot)
        self._storage(
            device,
            lambda: record_state(
                self._engine,
                device,
                online=state.online,
                boot=state.boot,
                at=at,
                payload=state.model_dump(exclude_none=True),
                clock=self._clock,
            ),
        )
        with self._lock:
            self._counts["states"] += 1

    def _will_at(self, device: str, boot: int) -> float:
        """The time a state without ``at`` (Last Will, goodbye) stands for.

        The agent always sends ``at`` (its Will carries the connection's); a client that does
        not is taken to end the newest connection of its boot, so the state takes that
        connection's ``at`` (and offline wins the tie in ``record_state``). An older boot's Will
        loses to a newer boot whatever its ``at``.
        """
        found = self._storage(
            device,
            lambda: self._stored_state(device),
        )
        if found is not None and found[0] == boot and found[1] is not None:
            return float(found[1])
        return 0.0

    def _stored_state(self, device: str) -> tuple[int | None, float | None] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(Device.boot, Device.state_at).where(Device.id == device)
            ).first()
        return None if row is None else (row[0], row[1])


def _more_to_read(client: mqtt.Client) -> bool:
    """Is another packet already waiting (TLS record buffered or bytes on the socket)?"""
    sock = client.socket()
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = selectmod.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def _tls_context(ca_file: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConsumerConfigError(f"cannot load the site CA {ca_file}: {err}") from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
