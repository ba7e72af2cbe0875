"""paho helpers shared by the device's sync agent and the server's consumer.

Both drive paho's ``loop()`` by hand in a thread of their own. In that mode paho's ``publish()``
called from another thread writes the TLS socket concurrently with the loop and corrupts the
stream, so :class:`PublishHandOff` passes such messages to the loop's thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    properties: Properties | None
    qos: int


class PublishHandOff:
    """Publishes from any thread through a client whose ``loop()`` one thread owns.

    The owner calls :meth:`claim` once, :meth:`send_pending` after each ``loop()`` while
    connected, and :meth:`drop_pending` when a connection ends.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Outgoing] = queue.SimpleQueue()
        self._owner: int | None = None

    def claim(self) -> None:
        """The calling thread runs the client's loop from now on."""
        self._owner = threading.get_ident()

    def publish(
        self,
        client: mqtt.Client,
        topic: str,
        payload: bytes,
        *,
        properties: Properties | None,
        qos: int,
    ) -> bool:
        """Publish now from the owner thread (a handler or hook); otherwise hand it over, to be
        sent within one ``loop()`` of the owner. False only when paho refuses it at once."""
        if threading.get_ident() == self._owner:
            info = client.publish(topic, payload, qos=qos, properties=properties)
            return info.rc == mqtt.MQTT_ERR_SUCCESS
        self._queue.put(_Outgoing(topic, payload, properties, qos))
        return True

    def send_pending(self, client: mqtt.Client) -> None:
        """In the owner thread: publish everything handed over."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            info = client.publish(
                item.topic, item.payload, qos=item.qos, properties=item.properties
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.debug("publish on %s not queued by paho (%s)", item.topic, info.rc)

    def drop_pending(self) -> None:
        """The connection ended (or a new one starts): forget what was handed over."""
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        if dropped:
            log.info("connection ended: %d message(s) handed to publish() not sent", dropped)


def set_no_delay(client: mqtt.Client) -> None:
    """TCP_NODELAY: paho writes each packet whole, and Nagle's algorithm would hold a small one
    (PUBACK, ack) until the peer's delayed ACK, ~40 ms, whenever earlier data is unacknowledged."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # an SSLSocket is one too
        with contextlib.suppress(OSError):  # not TCP: nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
