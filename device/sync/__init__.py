"""The device's sync agent: the outbox over MQTT v5 to the site broker (docs/sync-agent.md)."""

from __future__ import annotations

from device.sync.agent import (
    CLOCK_FLOOR,
    PUBLISH_TOPICS,
    ConnectHook,
    DownHandler,
    SyncAgent,
    SyncHealth,
)
from device.sync.backoff import Backoff
from device.sync.batches import build_batch
from device.sync.errors import SyncClosedError, SyncError

__all__ = [
    "CLOCK_FLOOR",
    "PUBLISH_TOPICS",
    "Backoff",
    "ConnectHook",
    "DownHandler",
    "SyncAgent",
    "SyncClosedError",
    "SyncError",
    "SyncHealth",
    "build_batch",
]
