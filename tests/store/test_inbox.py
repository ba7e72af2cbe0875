"""Inbox: replay protection that survives a restart, and pruning of long-expired ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.store import ReplayedCommandError, Store, StoreError, open_store


def test_replay_is_refused_across_reopen(db_path: Path, key: DeviceKey, clock: FakeClock) -> None:
    now = clock.time()
    with open_store(db_path, key=key, clock=clock) as store:
        assert not store.inbox.seen("cmd-1")
        with store.transaction() as tx:
            store.inbox.record("cmd-1", now, now + 60, "opened", tx=tx)
            tx.emit("command.done", {"cmd": "cmd-1"})
    with open_store(db_path, key=key, clock=clock) as store:
        assert store.inbox.seen("cmd-1")
        entry = store.inbox.get("cmd-1")
        assert entry is not None and entry.outcome == "opened"
        with pytest.raises(ReplayedCommandError, match="cmd-1"):
            store.inbox.record("cmd-1", now, now + 60, "opened")


def test_record_rolls_back_with_its_transaction(store: Store, clock: FakeClock) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.inbox.record("cmd-2", clock.time(), clock.time() + 5, "opened", tx=tx)
        raise RuntimeError("relay failed")
    assert not store.inbox.seen("cmd-2")


def test_prune_keeps_ids_until_expiry_plus_margin(store: Store, clock: FakeClock) -> None:
    now = clock.time()
    store.inbox.record("old", now - 100, now - 50, "expired")
    store.inbox.record("fresh", now, now + 50, "done")
    assert store.inbox.prune(margin=60) == 0
    clock.advance(20)
    assert store.inbox.prune(margin=60) == 1
    assert not store.inbox.seen("old") and store.inbox.seen("fresh")


def test_command_id_must_be_sane(store: Store) -> None:
    with pytest.raises(StoreError):
        store.inbox.seen("")
    with pytest.raises(StoreError):
        store.inbox.record("x" * 500, 0, 1, "done")
