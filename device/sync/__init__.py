"""The device's sync agent: the outbox over MQTT v5 to the site broker (docs/sync-agent.md)."""

from __future__ import annotations

from device.sync.agent import CLOCK_FLOOR, DownHandler, SyncAgent, SyncHealth
from device.sync.backoff import Backoff
from device.sync.batches import build_batch
from device.sync.errors import SyncClosedError, SyncError

__all__ = [
    "CLOCK_FLOOR",
    "Backoff",
    "DownHandler",
    "SyncAgent",
    "SyncClosedError",
    "SyncError",
    "SyncHealth",
    "build_batch",
]
