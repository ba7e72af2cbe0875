"""The :class:`Notifier` interface every channel adapter implements, and the default adapter,
:class:`RecordingNotifier`, which sends nothing (the service stores the row as ``recorded``)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sync_server.notify.masking import mask_recipient

__all__ = ["Notifier", "RecordedMessage", "RecordingNotifier"]

log = logging.getLogger(__name__)

RECENT_KEPT = 256
"""How many recorded messages :attr:`RecordingNotifier.recent` keeps (for tests and demos)."""


@runtime_checkable
class Notifier(Protocol):
    """Delivers one rendered notification on one channel (``sms``, ``wechat``...).

    ``send`` returns when the upstream accepted the message and raises a
    :class:`~sync_server.notify.errors.DeliveryFailedError` subclass otherwise: temporary (the
    service retries after a backoff) or permanent. It must be safe to call from several threads;
    ``close`` releases connections and is safe twice.
    """

    @property
    def channel(self) -> str:
        """The channel this adapter delivers on; the key it is registered under."""
        ...

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        """Deliver ``text`` (template ``template`` rendered with ``params``) to ``recipient``."""
        ...

    def close(self) -> None:
        """Release what the adapter holds (HTTP connections)."""
        ...


@dataclass(frozen=True)
class RecordedMessage:
    """What a :class:`RecordingNotifier` was asked to send."""

    recipient: str = field(repr=False)
    template: str
    text: str = field(repr=False)
    params: Mapping[str, str] = field(repr=False)


class RecordingNotifier:
    """The default adapter: delivers nothing, logs one INFO line (template, masked recipient).

    The database row (status ``recorded``) is the record; :attr:`recent` keeps the last
    messages in memory so a test or a demo can see what a resident would have received.
    """

    def __init__(self, channel: str = "record") -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._recent: deque[RecordedMessage] = deque(maxlen=RECENT_KEPT)

    def __repr__(self) -> str:
        return f"RecordingNotifier(channel={self._channel!r})"

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def recent(self) -> list[RecordedMessage]:
        """The last recorded messages, oldest first."""
        with self._lock:
            return list(self._recent)

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        with self._lock:
            self._recent.append(RecordedMessage(recipient, template, text, dict(params)))
        log.info(
            "%s notification %s for %s recorded, not sent (no %s adapter configured)",
            self._channel,
            template,
            mask_recipient(recipient),
            self._channel,
        )

    def close(self) -> None:
        """Nothing to release."""
