"""The sync agent: publishes the store's outbox to the site broker and deletes what the server acks.

One thread owns one paho MQTT v5 client per connection (a fresh one each time, so paho's in-memory
queue never matters: the outbox in SQLite is the queue). See docs/sync-agent.md.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.clock import SYSTEM_CLOCK, Clock
from device.config import SyncSection
from device.errors import ConfigError
from device.mqtt_io import PublishHandOff, set_no_delay
from device.protocol import MAX_SYNC_BYTES, MessageError, parse_ack, topic
from device.store import Store, StoreClosedError, StoreError, UnreadableEventError
from device.sync.backoff import Backoff
from device.sync.batches import next_batch
from device.sync.errors import SyncClosedError, SyncError

log = logging.getLogger(__name__)

CLOCK_FLOOR = 1_767_225_600.0
"""2026-01-01T00:00:00Z: no real date is earlier than this build, so an earlier clock is unset
(a Pi without RTC boots in 1970, where every certificate looks not yet valid)."""

HANDLER_TOPICS = ("down/cmd", "down/sync", "down/rpc")
LOOP_TIMEOUT_S = 0.05
"""paho's select() timeout: also how soon :meth:`SyncAgent.notify` is noticed."""
CONNACK_TIMEOUT_S = 10.0
GOODBYE_TIMEOUT_S = 2.0
ACK_APPLY_INTERVAL_S = 0.25
"""While a backlog drains, acked events are deleted from the outbox at most this often (one
commit for all acks since); a crash in between only resends events the server drops as
duplicates."""
NO_SUBSCRIBERS = 0x10
REFUSED_HINTS = {
    0x86: "bad user name or password: check [sync] password / password_file",
    0x87: "not authorized: check [sync] password / password_file and that the broker has an "
    "account named after the device id (linli provision broker --device ID)",
    0x85: "client id refused: the device id must be the broker account",
}

DownHandler = Callable[[mqtt.MQTTMessage], None]
"""Called in the agent's thread with a message from ``down/cmd``, ``down/sync`` or ``down/rpc``."""

ConnectHook = Callable[[], None]
"""Called in the agent's thread after every successful connect, once subscriptions are sent
(e.g. to ask for document versions newer than the store's)."""

PUBLISH_TOPICS = ("up/cmd-result", "up/sync-req", "up/rpc")
"""What :meth:`SyncAgent.publish` may send; ``up/events`` and ``up/state`` are the agent's own."""


@dataclass(frozen=True)
class SyncHealth:
    """What the agent is doing, for the device's status page and the ``up/state`` heartbeat."""

    state: str  # stopped | waiting_for_clock | connecting | connected | backoff
    connected: bool
    last_ack: int  # highest seq the server acked (0: none yet)
    last_ack_at: float | None  # wall time of that ack, from the agent's clock
    pending: int  # events in the outbox
    sent: int  # highest seq published by this process
    attempts: int  # connection attempts since start
    failures: int  # failed attempts in a row (0 when connected)
    last_error: str | None
    blocked_seq: int | None  # an event that can never be sent (see docs/sync-agent.md)


@dataclass
class _Batch:
    first: int
    last: int


class SyncAgent:
    """Sends ``store``'s outbox as ``device_id`` to the broker of ``config``; a context manager.

    ``clock`` gives wall time (the sanity floor, ack times) and the monotonic time of the ack
    timeout; waiting itself is on a stop event so :meth:`stop` is immediate.
    """

    def __init__(
        self,
        config: SyncSection,
        device_id: str,
        store: Store,
        *,
        clock: Clock = SYSTEM_CLOCK,
        clock_floor: float = CLOCK_FLOOR,
        rng: random.Random | None = None,
    ) -> None:
        if not config.host:
            raise ConfigError("sync.host: empty; set the broker's DNS name or IP to sync")
        self._config = config
        self._device_id = device_id
        self._topics = {name: topic(device_id, name) for name in ("up/events", "up/state")}
        self._ack_topic = topic(device_id, "down/ack")
        self._password = _password(config)
        self._tls = _tls_context(config.ca_file)
        self._store = store
        self._clock = clock
        self._floor = clock_floor
        self._backoff = Backoff(config.backoff_min_s, config.backoff_max_s, rng)
        self._handlers: dict[str, DownHandler] = {}
        self._handoff = PublishHandOff()
        self._connect_hooks: list[ConnectHook] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._closed = False
        self._clock_warned = False
        # Connection state, touched only by the agent thread (paho callbacks run in it too).
        self._client: mqtt.Client | None = None
        self._connected = False
        self._session_at = 0.0
        self._session_over = False
        self._inflight: list[_Batch] = []
        self._sent = 0
        self._max_sent = 0
        self._last_progress = 0.0
        self._next_poll = 0.0
        self._warned_no_subscribers = False
        self._blocked: int | None = None
        # Health, read by other threads (plain attribute reads of immutable values).
        self._state = "stopped"
        self._last_ack = store.outbox.acked_seq
        self._ack_applied = self._last_ack  # what the store has deleted up to (agent thread)
        self._ack_failing = False
        self._ack_applied_at = 0.0
        self._last_ack_at: float | None = None
        self._attempts = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"SyncAgent({self._device_id!r}, {self._state})"

    def __enter__(self) -> SyncAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- public API

    def add_handler(self, suffix: str, handler: DownHandler) -> None:
        """Receive ``down/cmd``, ``down/sync`` or ``down/rpc`` (subscribed on every connect).

        Register before :meth:`start`: a topic is only subscribed once something handles it, so
        the broker keeps its messages queued in the session instead of them being dropped here.
        """
        if suffix not in HANDLER_TOPICS:
            raise ValueError(f"no handler topic {suffix!r}; known: {', '.join(HANDLER_TOPICS)}")
        if self._running:
            raise SyncError("add handlers before start(): subscriptions are made on connect")
        self._handlers[topic(self._device_id, suffix)] = handler

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """Run ``hook`` in the agent's thread after every connect (register before start)."""
        if self._running:
            raise SyncError("add connect hooks before start()")
        self._connect_hooks.append(hook)

    def publish(
        self,
        suffix: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        qos: int = 1,
    ) -> bool:
        """Publish ``payload`` on this device's ``suffix`` topic now, if connected.

        For ``up/cmd-result``, ``up/sync-req`` and ``up/rpc``; safe from any thread: from
        another thread the message is handed to the agent's thread, which sends it within
        ``LOOP_TIMEOUT_S``. Returns False when there is no connection: nothing is queued, the
        caller decides (events that must not be lost belong in the outbox instead). A message
        handed over when the connection drops is discarded.
        """
        if suffix not in PUBLISH_TOPICS:
            raise ValueError(f"cannot publish on {suffix!r}; allowed: {', '.join(PUBLISH_TOPICS)}")
        client = self._client
        if client is None or not self._connected:
            return False
        name = topic(self._device_id, suffix)
        return self._handoff.publish(client, name, payload, properties=properties, qos=qos)

    @property
    def device_id(self) -> str:
        return self._device_id

    def notify(self) -> None:
        """New events are in the outbox: send them now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run the agent in a daemon thread of its own."""
        with self._lock:
            self._claim()
            self._thread = threading.Thread(
                target=self._run, name=f"sync-{self._device_id}", daemon=True
            )
            self._thread.start()

    def run(self) -> None:
        """Run the agent in this thread until :meth:`stop` (from another thread or a signal)."""
        with self._lock:
            self._claim()
        self._run()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish ``online: false``, disconnect and end the thread; safe twice."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("sync agent thread did not end within %.1f s", timeout_s)

    close = stop

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> SyncHealth:
        try:
            pending = self._store.outbox.count()
        except StoreError:
            pending = -1
        return SyncHealth(
            state=self._state,
            connected=self._connected,
            last_ack=self._last_ack,
            last_ack_at=self._last_ack_at,
            pending=pending,
            sent=self._max_sent,
            attempts=self._attempts,
            failures=self._backoff.failures,
            last_error=self._last_error,
            blocked_seq=self._blocked,
        )

    # ----------------------------------------------------------------- main loop

    def _claim(self) -> None:
        if self._closed:
            raise SyncClosedError("this sync agent was stopped; make a new SyncAgent")
        if self._running:
            raise SyncError("the sync agent is already running")
        self._running = True

    def _run(self) -> None:
        self._handoff.claim()
        try:
            while not self._stop.is_set():
                if not self._clock_sane():
                    self._stop.wait(min(1.0, self._config.poll_interval_s))
                    continue
                self._session()
                if self._stop.is_set():
                    break
                self._state = "backoff"
                delay = self._backoff.next_delay()
                log.debug("next connection attempt in %.2f s", delay)
                self._stop.wait(delay)
        except Exception:
            log.exception("sync agent stopped by an unexpected error")
            raise
        finally:
            self._state = "stopped"
            self._connected = False

    def _clock_sane(self) -> bool:
        now = self._clock.time()
        if now >= self._floor:
            if self._clock_warned:
                log.info("the clock reads %s now; connecting to the broker", _iso(now))
                self._clock_warned = False
            return True
        self._state = "waiting_for_clock"
        if not self._clock_warned:
            log.warning(
                "not connecting to the broker: the clock reads %s, before %s; TLS would find "
                "every certificate not yet valid. Waiting for NTP or the RTC to set the time.",
                _iso(now),
                _iso(self._floor),
            )
            self._clock_warned = True
        return False

    def _session(self) -> None:
        """One connection, from attempt to loss (or stop)."""
        self._handoff.drop_pending()  # a publish() racing the end of the last connection
        client = self._new_client()
        self._client = client
        self._connected = False
        self._session_over = False
        self._state = "connecting"
        self._attempts += 1
        config = self._config
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = config.session_expiry_s
        # Bounds what the broker may hand us: the largest message we accept is a down/sync.
        properties.MaximumPacketSize = MAX_SYNC_BYTES + 64 * 1024
        try:
            client.connect(
                config.host,
                config.port,
                keepalive=config.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            self._failed(f"cannot connect to {config.host}:{config.port}: {err}")
            return
        set_no_delay(client)
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        try:
            while not self._stop.is_set() and not self._session_over:
                rc = client.loop(timeout=LOOP_TIMEOUT_S)
                if self._connected:
                    self._handoff.send_pending(client)
                    self._pump(client)
                    self._apply_ack()
                elif rc != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                    if not self._session_over:
                        self._failed(f"no CONNACK from {config.host}:{config.port} ({rc.name})")
                    break
        finally:
            self._apply_ack(now=True)
            if self._connected and self._stop.is_set():
                self._goodbye(client)
            elif not self._session_over and client.is_connected():
                client.disconnect()
            self._connected = False
            self._client = None
            self._handoff.drop_pending()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._device_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(self._device_id, self._password)
        client.tls_set_context(self._tls)
        client.connect_timeout = CONNACK_TIMEOUT_S
        client.max_inflight_messages_set(self._config.max_inflight + 4)
        # The Will and this connection's online state carry the same ``at``: the server orders
        # state by (boot, at) and lets offline win a tie, so the Will ends exactly this session.
        self._session_at = self._clock.time()
        will = self._state_payload(False, self._session_at)
        client.will_set(self._topics["up/state"], will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _state_payload(self, online: bool, at: float | None = None) -> bytes:
        at = self._clock.time() if at is None else at
        state: dict[str, object] = {"online": online, "boot": self._store.boot, "at": at}
        return json.dumps(state, separators=(",", ":")).encode()

    def _goodbye(self, client: mqtt.Client) -> None:
        """A clean DISCONNECT does not fire the Last Will, so say ``online: false`` ourselves."""
        info = client.publish(
            self._topics["up/state"], self._state_payload(False), qos=1, retain=True
        )
        deadline = time.monotonic() + GOODBYE_TIMEOUT_S
        while time.monotonic() < deadline and client.is_connected():
            try:
                if info.is_published():
                    break
            except (RuntimeError, ValueError):  # paho: the publish failed, the link is gone
                break
            client.loop(timeout=LOOP_TIMEOUT_S)
        client.disconnect()
        log.info("disconnected from the broker")

    def _failed(self, reason: str) -> None:
        if reason != self._last_error or self._backoff.failures == 0:
            log.warning("sync: %s; retrying with backoff", reason)
        else:
            log.debug("sync: %s (attempt %d)", reason, self._attempts)
        self._last_error = reason
        self._session_over = True

    # ----------------------------------------------------------------- paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = REFUSED_HINTS.get(reason.value, "see the broker log")
            message = f"broker refused device {self._device_id}: {reason} ({hint})"
            if message != self._last_error:
                log.error("sync: %s; retrying with backoff", message)
            self._last_error = message
            self._session_over = True
            return
        if self._backoff.failures:
            log.info("connected to the broker after %d failed attempts", self._backoff.failures)
        else:
            log.info("connected to the broker (session present: %s)", flags.session_present)
        self._backoff.reset()
        self._last_error = None
        self._connected = True
        self._state = "connected"
        client.subscribe(self._ack_topic, qos=1)
        for name in self._handlers:
            client.subscribe(name, qos=1)
        online = self._state_payload(True, self._session_at)
        client.publish(self._topics["up/state"], online, qos=1, retain=True)
        # Everything not acked is sent again: paho's memory of the last connection is gone.
        self._inflight.clear()
        self._sent = self._last_ack
        self._last_progress = self._clock.monotonic()
        self._warned_no_subscribers = False
        self._wake.set()
        for hook in self._connect_hooks:
            try:
                hook()
            except Exception as err:  # a hook bug must not stop the sync of events
                log.exception("connect hook failed: %s", type(err).__name__)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._connected and not self._stop.is_set():
            log.warning("lost the broker connection: %s; reconnecting with backoff", reason)
            self._last_error = f"connection lost: {reason}"
        self._connected = False
        self._session_over = True

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        # A PUBACK only says the broker has the message; deletion waits for the server's ack.
        if reason.value == NO_SUBSCRIBERS:
            if not self._warned_no_subscribers:
                log.warning(
                    "broker has no subscriber for %s (PUBACK 0x10): the server is not "
                    "listening; events stay in the outbox until it acks them",
                    self._topics["up/events"],
                )
                self._warned_no_subscribers = True
        elif reason.is_failure:
            log.error("broker refused a publish from %s: %s", self._device_id, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._ack_topic:
            self._on_ack(bytes(msg.payload))
            return
        handler = self._handlers.get(msg.topic)
        if handler is None:
            log.warning("ignoring a message on %s: nothing handles it", msg.topic)
            return
        try:
            handler(msg)
        except Exception as err:  # a handler bug must not stop the sync of events
            log.exception("handler for %s failed: %s", msg.topic, type(err).__name__)

    def _on_ack(self, payload: bytes) -> None:
        try:
            seq = parse_ack(payload).seq
        except MessageError as err:
            log.warning("ignoring a malformed down/ack: %s", err)
            return
        if seq > self._max_sent:
            log.warning(
                "ignoring down/ack for seq %d: this agent has sent only up to seq %d",
                seq,
                self._max_sent,
            )
            return
        if seq <= self._last_ack:
            log.debug("duplicate or old down/ack for seq %d", seq)
            return
        # The window moves now; the outbox rows go in _apply_ack, once per loop turn for every
        # ack read in it (one commit, after the window is refilled). Until then a crash only
        # means those events are sent again, and the server acks duplicates without storing them.
        self._last_ack = seq
        self._last_ack_at = self._clock.time()
        self._last_progress = self._clock.monotonic()
        self._inflight = [batch for batch in self._inflight if batch.last > seq]
        self._sent = max(self._sent, seq)
        self._wake.set()

    def _apply_ack(self, *, now: bool = False) -> None:
        """Delete what the server acked from the outbox: one transaction for all acks so far.

        While batches are in flight this waits ``ACK_APPLY_INTERVAL_S`` between deletions (each
        is an fsync'd commit, and the loop that sends must not wait on it per ack); once all that
        was sent is acked, or ``now``, it deletes at once.
        """
        seq = self._last_ack
        if seq <= self._ack_applied:
            return
        moment = time.monotonic()
        if not now and self._inflight and moment - self._ack_applied_at < ACK_APPLY_INTERVAL_S:
            return
        self._ack_applied_at = moment
        try:
            removed = self._store.outbox.acked(seq)
        except StoreClosedError as err:
            log.error("the store is closed; the sync agent stops: %s", err)
            self._stop.set()
            return
        except StoreError as err:
            if not self._ack_failing:  # once, not every loop turn while it lasts
                log.warning("could not apply down/ack for seq %d (will retry): %s", seq, err)
            self._ack_failing = True
            return
        if self._ack_failing:
            log.info("applied down/ack for seq %d after earlier failures", seq)
        self._ack_failing = False
        log.debug("server acked up to seq %d: %d events removed", seq, removed)
        self._ack_applied = seq

    # ----------------------------------------------------------------- sending

    def _pump(self, client: mqtt.Client) -> None:
        now = self._clock.monotonic()
        if self._inflight and now - self._last_progress > self._config.ack_timeout_s:
            log.info(
                "no down/ack for %.0f s; publishing again from seq %d",
                now - self._last_progress,
                self._last_ack + 1,
            )
            self._inflight.clear()
            self._sent = self._last_ack
            self._last_progress = now
            self._wake.set()
        real_now = time.monotonic()
        if not self._wake.is_set() and real_now < self._next_poll:
            return
        self._wake.clear()
        self._next_poll = real_now + self._config.poll_interval_s
        try:
            self._fill_window(client)
        except StoreClosedError as err:
            log.error("the store is closed; the sync agent stops: %s", err)
            self._stop.set()
        except StoreError as err:
            log.warning("could not read the outbox (will retry): %s", err)

    def _fill_window(self, client: mqtt.Client) -> None:
        while len(self._inflight) < self._config.max_inflight:
            try:
                found = next_batch(
                    self._store.outbox,
                    self._device_id,
                    self._store.boot,
                    limit=self._config.batch_size,
                    after=self._sent,
                )
            except UnreadableEventError as err:
                self._block(err.seq, err)
                return
            except SyncError as err:
                self._block(self._sent + 1, err)
                return
            if found is None:
                return
            payload, first, last = found
            self._blocked = None
            info = client.publish(self._topics["up/events"], payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.debug("publish not queued (%s); waiting for the connection", info.rc)
                return
            batch = _Batch(first, last)
            if not self._inflight:
                self._last_progress = self._clock.monotonic()
            self._inflight.append(batch)
            self._sent = batch.last
            self._max_sent = max(self._max_sent, batch.last)

    def _block(self, seq: int, err: Exception) -> None:
        """Event ``seq`` can never be sent: say so once; nothing after it goes either."""
        if self._blocked != seq:
            log.error("sync is blocked: %s", err)
            self._blocked = seq


def _password(config: SyncSection) -> str:
    if config.password:
        return config.password
    if not config.password_file:
        raise ConfigError("sync.password_file: not set (nor sync.password); the broker needs one")
    path = Path(config.password_file)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"sync.password_file: cannot read {path}: {err}") from err
    if not password:
        raise ConfigError(f"sync.password_file: {path} is empty")
    return password


def _tls_context(ca_file: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"sync.ca_file: cannot load the site CA {ca_file}: {err}") from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp:.0f} (unix time)"
