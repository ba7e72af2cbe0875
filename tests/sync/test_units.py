"""The sync agent's pure parts and its start-up checks: batches, config, lifecycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.clock import FakeClock
from device.config import SyncSection, parse_config
from device.errors import ConfigError
from device.protocol import parse_events
from device.store import Store
from device.sync import SyncAgent, SyncClosedError, SyncError, build_batch
from device.sync.batches import next_batch
from tests.sync.conftest import DEVICE


def test_batches_shrink_to_fit_the_size_limit(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(10):
            tx.emit("test.big", {"blob": "x" * 1000, "i": i})
    events = store.outbox.pending(10)
    payload, count = build_batch(DEVICE, store.boot, events, max_bytes=4000)
    assert len(payload) <= 4000 and 1 <= count < 10
    assert [e.seq for e in parse_events(payload).events] == list(range(1, count + 1))


def test_an_event_too_large_to_send_is_an_error_not_skipped(store: Store) -> None:
    with store.transaction() as tx:
        tx.emit("test.big", {"blob": "x" * 5000})
    with pytest.raises(SyncError, match=r"seq 1 .*over the 4000-byte"):
        build_batch(DEVICE, store.boot, store.outbox.pending(1), max_bytes=4000)


def test_the_wire_batch_is_what_the_schema_reads_back(store: Store) -> None:
    """The payload is spliced from stored JSON text: the pydantic schema the server applies
    must read back every field, including personal (sealed) data and non-ASCII text."""
    with store.transaction() as tx:
        tx.emit("resident.visit", {"名字": "张三", "n": [1, 2.5, None]}, personal=True)
        tx.emit("door.opened", {"compartment": 3, "at": 1.25})
        tx.emit("door.closed", {})
    events = store.outbox.pending()
    payload, count = build_batch(DEVICE, store.boot, store.outbox.pending_wire())
    assert count == 3
    batch = parse_events(payload)
    assert (batch.device, batch.boot) == (DEVICE, store.boot)
    assert [e.model_dump() for e in batch.events] == [dict(e.wire()) for e in events]
    # Events read with their data parsed give the same payload, byte for byte.
    assert build_batch(DEVICE, store.boot, events) == (payload, 3)


def test_an_unsendable_event_later_in_a_batch_lets_the_ones_before_go(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(3):
            tx.emit("door.opened", {"i": i})
    good = store.outbox.pending_wire()
    bad = [good[0], good[1], good[2]._replace(id="not-an-id")]
    payload, count = build_batch(DEVICE, store.boot, bad)
    assert count == 2 and [e.seq for e in parse_events(payload).events] == [1, 2]
    with pytest.raises(SyncError, match=r"seq 3 .*id: must be 32 lower-case hex"):
        build_batch(DEVICE, store.boot, bad[2:])
    for broken, why in [
        (good[0]._replace(type="Door"), "type"),
        (good[0]._replace(at=float("nan")), "at"),
        (good[0]._replace(data=b"[1, 2]"), "data: must be a JSON object"),
    ]:
        with pytest.raises(SyncError, match=why):
            build_batch(DEVICE, store.boot, [broken])


def _with_sync(**sync: object) -> dict[str, object]:
    return {"device": {"id": "k", "kind": "kiosk"}, "sync": sync}


def test_sync_section_defaults_and_key_checks() -> None:
    cfg = parse_config({"device": {"id": "k", "kind": "kiosk"}})
    assert cfg.sync.host == "" and cfg.sync.port == 8883 and cfg.sync.batch_size == 100
    with pytest.raises(ConfigError, match=r"sync\.backoff_max_s: .*backoff_min_s"):
        parse_config(_with_sync(backoff_min_s=5, backoff_max_s=1))
    with pytest.raises(ConfigError, match=r"sync\.password_file: .*not both") as info:
        parse_config(_with_sync(password="s3cret", password_file="/p"))
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"sync\.batch_size"):
        parse_config(_with_sync(batch_size=5000))


def test_agent_start_checks_name_the_key(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    with pytest.raises(ConfigError, match=r"sync\.host"):
        SyncAgent(SyncSection(), DEVICE, store, clock=clock)
    with pytest.raises(ConfigError, match=r"sync\.password_file: not set"):
        SyncAgent(SyncSection(host="h"), DEVICE, store, clock=clock)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"sync\.password_file: cannot read"):
        SyncAgent(SyncSection(host="h", password_file=str(missing)), DEVICE, store, clock=clock)
    (tmp_path / "pw").write_text("pw\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sync\.ca_file"):
        SyncAgent(
            SyncSection(host="h", password_file=str(tmp_path / "pw"), ca_file=str(missing)),
            DEVICE,
            store,
            clock=clock,
        )


def test_use_after_stop_raises(store: Store, tmp_path: Path) -> None:
    agent = SyncAgent(
        SyncSection(host="127.0.0.1", port=1, password="x", ca_file=_any_ca()),
        DEVICE,
        store,
        clock=FakeClock(start=0.0, wall=5.0),  # never tries to connect
    )
    agent.start()
    with pytest.raises(SyncError, match="already running"):
        agent.start()
    agent.stop()
    agent.stop()
    with pytest.raises(SyncClosedError, match="make a new SyncAgent"):
        agent.start()
    with pytest.raises(ValueError, match="down/nope"):
        agent.add_handler("down/nope", lambda message: None)


def _any_ca() -> str:
    import ssl

    path = ssl.get_default_verify_paths().cafile
    if path is None:
        pytest.skip("no system CA bundle to stand in for the site CA")
    return path


def test_next_batch_reads_a_run_in_one_step_and_falls_back_row_by_row(store: Store) -> None:
    """The joined read (wire text kept from emit) and the row-by-row one send the same events;
    sealed events, events without wire text (queued before migration 2) and a run over the size
    limit go row by row."""
    with store.transaction() as tx:
        for i in range(5):
            tx.emit("door.opened", {"i": i, "名": "门"})
    joined = store.outbox.pending_joined(10)
    assert joined is not None and (joined.first, joined.last, joined.events) == (1, 5, 5)
    payload, first, last = next_batch(store.outbox, DEVICE, store.boot, limit=10, after=0) or (
        b"",
        0,
        0,
    )
    assert (first, last) == (1, 5)
    row_by_row, _ = build_batch(DEVICE, store.boot, store.outbox.pending_wire(10))
    assert parse_events(payload) == parse_events(row_by_row)
    # A sealed event in the run: not joinable, and the batch still carries it (opened).
    with store.transaction() as tx:
        tx.emit("resident.visit", {"name": "张三"}, personal=True)
    assert store.outbox.pending_joined(10, after=5) is None
    found = next_batch(store.outbox, DEVICE, store.boot, limit=10, after=5)
    assert found is not None and found[1:] == (6, 6)
    assert parse_events(found[0]).events[0].data == {"name": "张三"}
    # An event queued before wire text was kept.
    with store.transaction() as tx:
        tx.emit("door.closed", {"i": 7})
        tx.execute("UPDATE outbox SET wire = NULL WHERE seq = 7")
    assert store.outbox.pending_joined(10, after=6) is None
    found = next_batch(store.outbox, DEVICE, store.boot, limit=10, after=6)
    assert found is not None and parse_events(found[0]).events[0].data == {"i": 7}
    # Over the size limit: the row-by-row path takes the longest prefix that fits.
    found = next_batch(store.outbox, DEVICE, store.boot, limit=10, after=0, max_bytes=400)
    assert found is not None and found[1] == 1 and 1 <= found[2] < 5 and len(found[0]) <= 400
    assert next_batch(store.outbox, DEVICE, store.boot, limit=10, after=7) is None
