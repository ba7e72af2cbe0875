"""Outbox: atomic with the state change, seq never repeats, boot counts opens, ack semantics."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.store import Store, StoreError, UnreadableEventError, open_store


def make_state(store: Store) -> None:
    with store.transaction() as tx:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS demo_compartments (no INTEGER PRIMARY KEY, state TEXT)"
        )
        tx.execute("INSERT OR IGNORE INTO demo_compartments VALUES (3, 'free')")


def state(store: Store) -> str:
    with store.reading() as conn:
        return str(conn.execute("SELECT state FROM demo_compartments WHERE no = 3").fetchone()[0])


def test_state_change_and_event_commit_together(store: Store, clock: FakeClock) -> None:
    make_state(store)
    with store.transaction() as tx:
        tx.execute("UPDATE demo_compartments SET state = 'open_for_pickup' WHERE no = 3")
        event = tx.emit("compartment.opened", {"compartment": 3})
    assert state(store) == "open_for_pickup"
    [pending] = store.outbox.pending()
    assert pending == event
    assert (pending.seq, pending.type, pending.at) == (1, "compartment.opened", clock.time())
    assert len(pending.id) == 32
    assert pending.wire() == {
        "seq": 1,
        "id": event.id,
        "type": "compartment.opened",
        "at": clock.time(),
        "data": {"compartment": 3},
    }


def test_exception_inside_transaction_leaves_neither(store: Store) -> None:
    make_state(store)
    with pytest.raises(RuntimeError, match="lock jammed"), store.transaction() as tx:
        tx.execute("UPDATE demo_compartments SET state = 'open_for_pickup' WHERE no = 3")
        tx.emit("compartment.opened", {"compartment": 3})
        raise RuntimeError("lock jammed")
    assert state(store) == "free"
    assert store.outbox.pending() == []
    assert store.outbox.last_seq == 0  # the rolled back seq is free again: it was never sent
    with store.transaction() as tx:
        assert tx.emit("compartment.opened", {}).seq == 1


def test_transaction_cannot_be_used_after_its_block(store: Store) -> None:
    with store.transaction() as tx:
        pass
    with pytest.raises(StoreError, match="has ended"):
        tx.emit("x.y", {})


def test_transactions_do_not_nest(store: Store) -> None:
    with store.transaction(), pytest.raises(StoreError, match="already open"):
        store.outbox.acked(0)


def test_seq_never_repeats_across_acks_and_reopen(db_path: Path, key: DeviceKey) -> None:
    seen: list[int] = []
    for _ in range(3):
        with open_store(db_path, key=key) as store:
            for _ in range(5):
                with store.transaction() as tx:
                    seen.append(tx.emit("tick.tock", {}).seq)
            store.outbox.acked(store.outbox.last_seq)  # table now empty
            assert store.outbox.count() == 0
    assert seen == list(range(1, 16))


def test_boot_increments_on_each_open(db_path: Path, key: DeviceKey) -> None:
    boots = []
    for _ in range(3):
        with open_store(db_path, key=key) as store:
            boots.append(store.boot)
            with store.transaction() as tx:
                assert tx.emit("kiosk.started", {}).boot == store.boot
    assert boots == [1, 2, 3]


def emit_n(store: Store, n: int) -> None:
    for i in range(n):
        with store.transaction() as tx:
            tx.emit("tick.tock", {"i": i})


def test_partial_ack_keeps_the_rest_in_order(store: Store) -> None:
    emit_n(store, 10)
    assert store.outbox.acked(4) == 4
    assert [e.seq for e in store.outbox.pending()] == [5, 6, 7, 8, 9, 10]
    assert [e.seq for e in store.outbox.pending(2, after=6)] == [7, 8]
    assert store.outbox.acked(4) == 0  # duplicate ack
    assert store.outbox.acked(2) == 0  # late, older ack
    assert store.outbox.acked_seq == 4


def test_ack_beyond_issued_is_ignored_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    emit_n(store, 3)
    with caplog.at_level(logging.WARNING):
        assert store.outbox.acked(99) == 0
    assert "ignoring ack for seq 99" in caplog.text
    assert [e.seq for e in store.outbox.pending()] == [1, 2, 3]
    assert store.outbox.acked_seq == 0


def test_bad_event_type_and_data_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="dotted lower-case"), store.transaction() as tx:
        tx.emit("Compartment Opened", {})
    with pytest.raises(StoreError, match="JSON"), store.transaction() as tx:
        tx.emit("x.y", {"v": float("nan")})
    assert store.outbox.last_seq == 0


def test_personal_event_is_sealed_and_opens_for_sending(store: Store, db_path: Path) -> None:
    with store.transaction() as tx:
        event = tx.emit("resident.identified", {"name": "王伟"}, personal=True)
    assert "王伟" not in repr(event)
    [pending] = store.outbox.pending()
    assert pending.data == {"name": "王伟"} and pending.personal
    raw = db_path.read_bytes() + Path(f"{db_path}-wal").read_bytes()
    assert "王伟".encode() not in raw


def test_threads_share_one_store_without_losing_seqs(store: Store) -> None:
    def worker() -> None:
        emit_n(store, 25)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in store.outbox.pending(1000)] == list(range(1, 101))


def test_two_processes_share_the_counter(db_path: Path, key: DeviceKey) -> None:
    with open_store(db_path, key=key) as a, open_store(db_path, key=key) as b:
        assert (a.boot, b.boot) == (1, 2)
        emit_n(a, 2)
        emit_n(b, 2)
        emit_n(a, 1)
        assert [e.seq for e in a.outbox.pending()] == [1, 2, 3, 4, 5]


def test_pending_wire_opens_sealed_data_and_names_one_that_does_not_open(
    db_path: Path, key: DeviceKey
) -> None:
    store = open_store(db_path, key=key)
    with store.transaction() as tx:
        tx.emit("resident.visit", {"name": "张三"}, personal=True)
    [wire] = store.outbox.pending_wire()
    assert wire.data == '{"name":"张三"}'.encode() and wire.seq == 1
    store.close()
    other = open_store(db_path, key=DeviceKey.generate())  # the wrong key: nothing opens
    try:
        with pytest.raises(UnreadableEventError, match="seq 1 does not open") as caught:
            other.outbox.pending_wire()
        assert caught.value.seq == 1 and "张三" not in str(caught.value)
    finally:
        other.close()
