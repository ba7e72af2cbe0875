"""The device input watch with a PC/SC reader configured: real pcscd, vpcd card, real drivers."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from device.inputs import InputEvent, InputWatch
from device.pcsc.profile import CardRecord
from hardware_sim.world import World

from .conftest import Pcscd

pytestmark = pytest.mark.pcscd


def test_card_insert_and_removal_reach_the_input_listener(
    pcscd: Pcscd, record: CardRecord, tmp_path: Path
) -> None:
    events: queue.Queue[InputEvent] = queue.Queue()
    with World(tmp_path / "site", pcsc=True, vpcd_port=pcscd.port, pace=False) as world:
        assert world.card is not None
        config = world.device_config()
        assert config.pcsc.backend == "pcsc"
        with InputWatch(config, events.put) as watch:
            world.card.insert(record)
            seen: list[str] = []
            deadline = time.monotonic() + 15
            while "removed" not in seen and time.monotonic() < deadline:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event.card is None:
                    continue
                seen.append(event.card.kind)
                if event.card.kind == "inserted":
                    assert event.card.record is not None
                    assert event.card.record.number == record.number
                    assert watch.health()["pcsc"] is True
                    world.card.remove()
    assert "inserted" in seen and "removed" in seen
