"""Helpers shared by the tests that run the sync agent against a private real Mosquitto."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from device.config import SyncSection
from hardware_sim.mosquitto import MosquittoTestBroker


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; an AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


def agent_config(broker: MosquittoTestBroker, device: str, **overrides: Any) -> SyncSection:
    """``[sync]`` for ``device`` on ``broker``, with short keepalive and backoff for tests."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": broker.tls_port,
        "ca_file": str(broker.ca_cert),
        "password": broker.credentials[device].password,
        "keepalive_s": 10,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.4,
        "poll_interval_s": 0.1,
    }
    values.update(overrides)
    return SyncSection(**values)
