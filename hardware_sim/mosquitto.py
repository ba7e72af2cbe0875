"""A private, real Mosquitto broker for tests and development, configured by provisioning.broker.

:class:`MosquittoTestBroker` runs ``mosquitto -c`` on free loopback ports with the site's TLS
certificate, password file and ACL; it can be stopped, killed and restarted on the same ports and
persistence directory. :class:`MqttTestClient` is a connected paho MQTT v5 client that waits for
SUBACK/PUBACK and collects messages, so tests assert what the broker really answered.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.errors import DeviceTimeoutError, DeviceUnavailableError, LinliError
from hardware_sim.processes import accepts, reserved_tcp_port, stop_process
from provisioning.broker import (
    INSTALL_HINT,
    Credential,
    ListenerOptions,
    ProvisionResult,
    SiteFiles,
    provision_broker,
    render_mosquitto_conf,
)

__all__ = [
    "INSTALL_HINT",
    "BrokerConnectError",
    "MosquittoTestBroker",
    "MqttTestClient",
    "mosquitto_path",
]


MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's path; /usr/sbin is often not on a user's PATH


class BrokerConnectError(LinliError, ConnectionError):
    """The broker refused or dropped the connection; ``reason`` is its CONNACK reason (if any)."""

    def __init__(self, message: str, reason: ReasonCode | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def mosquitto_path() -> str:
    """The ``mosquitto`` program, or a :class:`DeviceUnavailableError` with the install hint."""
    found = shutil.which("mosquitto") or MOSQUITTO
    if not Path(found).exists():
        raise DeviceUnavailableError(f"mosquitto is not installed; {INSTALL_HINT}")
    return found


class MosquittoTestBroker:
    """Our own mosquitto on 127.0.0.1; ``site`` is the provisioned site (new one if not given).

    ``tls_port`` is fixed at construction so a restart keeps the address clients use;
    ``plain_port`` (loopback only) exists when ``plain=True``.
    """

    def __init__(
        self,
        site_dir: Path | None = None,
        *,
        devices: Sequence[str] = ("dev-a", "dev-b"),
        plain: bool = False,
        server_user: str = "linli-server",
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="linli-mosquitto-"))
        site = site_dir or self.root / "site"
        self.site: ProvisionResult = provision_broker(site, devices, server_user=server_user)
        self.credentials: dict[str, Credential] = dict(self.site.created)
        self.server_user = server_user
        self.tls_port = reserved_tcp_port()
        self.plain_port = reserved_tcp_port() if plain else None
        self.persistence_dir = self.root / "data"
        self.log_file = self.root / "mosquitto.log"
        self.conf = self.root / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def files(self) -> SiteFiles:
        return self.site.files

    @property
    def ca_cert(self) -> Path:
        return self.site.files.ca_cert

    def __enter__(self) -> MosquittoTestBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_devices(self, *devices: str) -> dict[str, Credential]:
        """Provision more devices into the site; restart (stop/start) or :meth:`reload` to apply."""
        more = provision_broker(self.files.root, devices, server_user=self.server_user)
        self.credentials.update(more.created)
        return dict(more.created)

    def _write_conf(self) -> None:
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        options = ListenerOptions(
            tls_port=self.tls_port,
            tls_bind="127.0.0.1",
            plain_port=self.plain_port,
            persistence_dir=self.persistence_dir,
            log_file=self.log_file,
            # As root mosquitto would switch to user `mosquitto`, which cannot read our 0600 files.
            run_as="root" if os.geteuid() == 0 else None,
        )
        self.conf.write_text(render_mosquitto_conf(self.files, options), encoding="utf-8")

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the broker and wait until every listener accepts connections."""
        if self.running:
            return
        binary = mosquitto_path()
        self._write_conf()
        with (self.root / "stdout.log").open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 -- fixed arguments, no shell
                [binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        ports = [p for p in (self.tls_port, self.plain_port) if p is not None]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise DeviceUnavailableError(f"mosquitto exited at start; {self._log_tail()}")
            if all(accepts(p) for p in ports):
                return
            time.sleep(0.05)
        self.kill()
        raise DeviceUnavailableError(
            f"mosquitto did not listen in {timeout_s}s; {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        texts = []
        for path in (self.log_file, self.root / "stdout.log"):
            if path.exists():
                texts.append(path.read_text(encoding="utf-8", errors="replace")[-1500:])
        return f"log {self.log_file}:\n" + "\n".join(texts)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto writes its persistence file (sessions, queued QoS 1) and exits."""
        if self.process is None:
            return
        stop_process(self.process, timeout_s)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash; anything not yet autosaved is lost, as on a real broker."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=5)
        self.process = None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the password file and ACL (after :meth:`add_devices`)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def cleanup(self) -> None:
        """Stop and remove the runtime directory (and the site, if it was created here)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(
        self,
        username: str,
        password: str | None = None,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        ca_file: Path | None = None,
        connect: bool = True,
    ) -> MqttTestClient:
        """A paho v5 TLS client for ``username`` (password from this site unless given)."""
        if password is None:
            password = self.credentials[username].password
        test_client = MqttTestClient(
            host="127.0.0.1",
            port=self.tls_port,
            username=username,
            password=password,
            client_id=client_id or username,
            ca_file=ca_file or self.ca_cert,
        )
        if connect:
            test_client.connect(clean_start=clean_start, session_expiry_s=session_expiry_s)
        return test_client

    def server_client(self, client_id: str = "server-1", **kwargs: Any) -> MqttTestClient:
        """The sync server's account (shared subscription consumer, ``down`` publisher)."""
        return self.client(self.server_user, client_id=client_id, **kwargs)


class MqttTestClient:
    """A paho MQTT v5 client that turns callbacks into waits: SUBACK and PUBACK reason codes,
    received messages in a queue. ``ca_file=None`` means plain TCP (no TLS)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        ca_file: Path | None,
        timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._lock = threading.Lock()
        self._acks: dict[int, list[ReasonCode] | ReasonCode] = {}
        self._ack_event = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.paho.username_pw_set(username, password)
        if ca_file is not None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.paho.tls_set_context(context)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_publish = self._on_publish
        self.paho.on_message = self._on_message

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # paho callbacks (network thread)
    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self.connect_reason = reason
        if reason.is_failure:
            self._disconnected.set()
        else:
            self._connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if self.connect_reason is None:
            self.connect_reason = reason
        self._connected.clear()
        self._disconnected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        with self._ack_event:
            self._acks[mid] = list(reasons)
            self._ack_event.notify_all()

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._ack_event:
            self._acks[mid] = reason
            self._ack_event.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def connect(self, *, clean_start: bool = True, session_expiry_s: int | None = None) -> None:
        """Connect and wait for CONNACK; :class:`BrokerConnectError` if refused or dropped."""
        properties = None
        if session_expiry_s is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry_s
        self.connect_reason = None
        self._disconnected.clear()
        try:
            self.paho.connect(
                self.host, self.port, keepalive=30, clean_start=clean_start, properties=properties
            )
        except (OSError, ssl.SSLError) as err:
            raise BrokerConnectError(f"cannot connect to {self.host}:{self.port}: {err}") from err
        self.paho.loop_start()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._connected.wait(0.05):
                return
            if self._disconnected.is_set():
                break
        self.paho.loop_stop()
        reason = self.connect_reason
        raise BrokerConnectError(
            f"broker at {self.host}:{self.port} refused the connection: {reason}", reason
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _wait_ack(self, mid: int, what: str) -> list[ReasonCode] | ReasonCode:
        with self._ack_event:
            if not self._ack_event.wait_for(lambda: mid in self._acks, self.timeout_s):
                raise DeviceTimeoutError(f"no {what} for message id {mid} in {self.timeout_s}s")
            return self._acks.pop(mid)

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        """Subscribe and return the broker's SUBACK reason code for ``topic``."""
        result, mid = self.paho.subscribe(topic, qos=qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerConnectError(f"SUBSCRIBE {topic} not sent: {mqtt.error_string(result)}")
        reasons = self._wait_ack(mid, "SUBACK")
        assert isinstance(reasons, list)
        return reasons[0]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> ReasonCode | None:
        """Publish; with QoS 1 wait for PUBACK and return its reason code (None for QoS 0)."""
        info = self.paho.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerConnectError(f"PUBLISH {topic} not sent: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return None
        reason = self._wait_ack(info.mid, "PUBACK")
        assert isinstance(reason, ReasonCode)
        return reason

    def expect_message(self, timeout_s: float | None = None) -> mqtt.MQTTMessage:
        """The next message received; :class:`DeviceTimeoutError` if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout_s or self.timeout_s)
        except queue.Empty:
            raise DeviceTimeoutError(f"no message in {timeout_s or self.timeout_s}s") from None

    def drain(self, within_s: float = 0.5) -> list[mqtt.MQTTMessage]:
        """Every message that arrives within ``within_s`` (to show that none did)."""
        got: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def disconnect(self) -> None:
        """Disconnect cleanly (safe twice); a persistent session stays on the broker."""
        if self._connected.is_set():
            self.paho.disconnect()
            self._disconnected.wait(self.timeout_s)
        self.paho.loop_stop()
        self._connected.clear()
