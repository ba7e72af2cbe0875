"""The sync daemon's upkeep: command ids expired long ago are forgotten, on start and hourly."""

from __future__ import annotations

import threading
from pathlib import Path

from device.clock import FakeClock
from device.config import parse_config
from device.store import Store
from device.store.inbox import PRUNE_MARGIN
from device.sync.daemon import PRUNE_INTERVAL_S, SyncDaemon
from hardware_sim.mosquitto import MosquittoTestBroker
from tests.sync.conftest import DEVICE, sync_config


def test_run_until_prunes_expired_command_ids_and_keeps_live_ones(
    broker: MosquittoTestBroker, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    sync = sync_config(broker).model_dump()
    sync["server_keys_dir"] = str(tmp_path / "no-keys")
    config = parse_config(
        {"device": {"id": DEVICE, "kind": "locker", "data_dir": str(tmp_path)}, "sync": sync}
    )
    now = clock.time()
    store.inbox.record("old", now - 3 * PRUNE_MARGIN, now - 2 * PRUNE_MARGIN, "ran")
    store.inbox.record("live", now, now + 60, "ran")
    daemon = SyncDaemon(config, store=store, clock=clock)
    stop = threading.Event()
    stop.set()  # one pass: the prune due at start, then return
    daemon.run_until(stop, tick_s=0)
    assert not store.inbox.seen("old") and store.inbox.seen("live")
    # An hour later (the live one now long expired too) the next pass forgets it as well.
    clock.advance(PRUNE_INTERVAL_S + 2 * PRUNE_MARGIN)
    daemon.run_until(stop, tick_s=0)
    assert not store.inbox.seen("live")
    store.close()
    assert daemon.prune() == 0  # a store error is logged and reported as nothing pruned
