"""Storing up/events batches: each event once, ack = highest contiguous stored seq."""

from __future__ import annotations

import json
import logging
import random

import pytest
from sqlalchemy import Engine, select

from device.protocol import (
    MAX_EVENTS_BATCH_BYTES,
    NotJSONError,
    OversizeError,
    SchemaError,
    encode,
)
from sync_server.errors import DeviceMismatchError
from sync_server.ingest import (
    acked_seq,
    ingest_batch,
    register_device,
    store_batch,
    store_events_payload,
)
from sync_server.models import Device, Event
from tests.server.helpers import batch, event_count, event_id, stored_seqs


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_stored_with_every_field(engine: Engine) -> None:
    clock = FakeClock()
    assert store_batch(engine, batch("locker-01", range(1, 4), boot=7), clock=clock) == 3
    with engine.connect() as conn:
        rows = conn.execute(select(Event).order_by(Event.seq)).all()
    assert [(r.seq, r.event_id, r.boot, r.received_at) for r in rows] == [
        (s, event_id(s), 7, clock.now) for s in (1, 2, 3)
    ]
    assert rows[0].type == "compartment.opened"
    assert rows[0].data == {"seq": 1, "no": 1}
    assert rows[2].at == 1_700_000_003.0


def test_redelivery_is_stored_once_and_acked_the_same(engine: Engine) -> None:
    first = ingest_batch(engine, batch("kiosk-01", range(1, 11)))
    again = ingest_batch(engine, batch("kiosk-01", range(1, 11)))
    assert (first.ack, first.stored, first.duplicates) == (10, 10, 0)
    assert (again.ack, again.stored, again.duplicates) == (10, 0, 10)
    assert stored_seqs(engine, "kiosk-01") == list(range(1, 11))


def test_overlapping_batch_stores_only_the_new_events(engine: Engine) -> None:
    store_batch(engine, batch("kiosk-01", range(1, 11)))
    result = ingest_batch(engine, batch("kiosk-01", range(6, 16)))
    assert (result.ack, result.stored, result.duplicates) == (15, 5, 5)
    assert stored_seqs(engine, "kiosk-01") == list(range(1, 16))


def test_ack_stops_at_a_gap_until_it_is_filled(engine: Engine) -> None:
    assert store_batch(engine, batch("locker-01", range(1, 6))) == 5
    # 6..9 still in flight (another server process, a lost message): 10..14 arrive first.
    assert store_batch(engine, batch("locker-01", range(10, 15))) == 5
    assert store_batch(engine, batch("locker-01", [6, 8])) == 6
    assert acked_seq(engine, "locker-01") == 6
    assert store_batch(engine, batch("locker-01", [7, 9])) == 14
    assert stored_seqs(engine, "locker-01") == list(range(1, 15))


def test_nothing_is_acked_before_seq_1_is_stored(engine: Engine) -> None:
    assert store_batch(engine, batch("locker-01", range(2, 5))) == 0
    assert acked_seq(engine, "locker-01") == 0
    assert store_batch(engine, batch("locker-01", [1])) == 4


def test_ack_walks_over_more_than_one_page_of_stored_events(engine: Engine) -> None:
    for start in range(2, 2502, 1000):
        assert store_batch(engine, batch("kiosk-01", range(start, start + 1000))) == 0
    assert store_batch(engine, batch("kiosk-01", [1])) == 3001


@pytest.mark.parametrize("seed", range(4))
def test_ack_is_the_contiguous_prefix_whatever_the_arrival_order(engine: Engine, seed: int) -> None:
    """Out-of-order and repeated arrivals (two server processes, redelivery): after each batch
    the ack is exactly the longest run 1..n stored, never past a gap."""
    rng = random.Random(seed)
    runs = [list(range(start, start + rng.randint(1, 4))) for start in range(1, 60, 4)]
    arrivals = runs + rng.sample(runs, 3)
    rng.shuffle(arrivals)
    stored: set[int] = set()
    for seqs in arrivals:
        stored.update(seqs)
        expected = 0
        while expected + 1 in stored:
            expected += 1
        assert store_batch(engine, batch("kiosk-01", seqs)) == expected


def test_devices_are_acked_independently(engine: Engine) -> None:
    store_batch(engine, batch("kiosk-01", range(1, 4)))
    assert store_batch(engine, batch("locker-01", range(1, 3))) == 2
    assert acked_seq(engine, "kiosk-01") == 3
    assert acked_seq(engine, "never-seen") == 0


def test_largest_seqs_and_batches_are_stored(engine: Engine) -> None:
    top = 2**63 - 1
    store_batch(engine, batch("kiosk-01", range(top - 999, top + 1)))
    assert stored_seqs(engine, "kiosk-01")[-1] == top
    assert event_count(engine) == 1000


def test_awkward_json_is_stored_as_sent(engine: Engine) -> None:
    data = {"text": "居住证明 \u0000 \U0001f600", "big": 2**70, "nested": [{"a": None}], "f": 0.1}
    payload = json.dumps(
        {
            "device": "kiosk-01",
            "boot": 1,
            "events": [{"seq": 1, "id": "a" * 32, "type": "x", "at": 1.5, "data": data}],
        }
    ).encode()
    assert store_events_payload(engine, "kiosk-01", payload).ack == 1
    with engine.connect() as conn:
        assert conn.execute(select(Event.data)).scalar_one() == data


def test_a_seq_reused_with_another_id_is_kept_once_and_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    store_batch(engine, batch("kiosk-01", range(1, 4)))
    with caplog.at_level(logging.ERROR, logger="sync_server.ingest"):
        result = ingest_batch(engine, batch("kiosk-01", range(1, 5), salt=9))
    assert (result.ack, result.stored, result.conflicts) == (4, 1, 3)
    assert "reused 3 seqs" in caplog.text
    with engine.connect() as conn:
        first = conn.execute(select(Event.event_id).where(Event.seq == 1)).scalar_one()
    assert first == event_id(1)


def test_device_row_follows_first_and_last_seen(engine: Engine) -> None:
    clock = FakeClock(100.0)
    register_device(engine, "locker-01", "locker", clock=clock)
    clock.now = 200.0
    store_batch(engine, batch("locker-01", [1]), clock=clock)
    clock.now = 150.0  # a process with a slower clock must not move last_seen back
    store_batch(engine, batch("locker-01", [2]), clock=clock)
    with engine.connect() as conn:
        device = conn.execute(select(Device)).one()
    assert (device.kind, device.first_seen, device.last_seen) == ("locker", 100.0, 200.0)
    assert device.online is False


def _valid_payload(device: str = "kiosk-01") -> bytes:
    return encode(batch(device, range(1, 3)))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xff\xfe", NotJSONError),
        (b"{not json", NotJSONError),
        (b'{"device": "kiosk-01", "boot": 1, "events": []}', SchemaError),
        (_valid_payload().replace(b'"seq":2', b'"seq":1'), SchemaError),
        (_valid_payload().replace(b'"boot":1', b'"boot":1,"extra":1'), SchemaError),
        (_valid_payload().replace(b'"at":', b'"at":-'), SchemaError),
        (b" " * (MAX_EVENTS_BATCH_BYTES + 1), OversizeError),
        (_valid_payload("locker-99"), DeviceMismatchError),
    ],
    ids=[
        "not-utf8",
        "not-json",
        "no-events",
        "seq-not-increasing",
        "extra-key",
        "negative-at",
        "oversize",
        "other-device",
    ],
)
def test_malformed_batch_is_refused_before_anything_is_stored(
    engine: Engine, payload: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store_events_payload(engine, "kiosk-01", payload)
    assert event_count(engine) == 0
    assert acked_seq(engine, "kiosk-01") == 0
    with engine.connect() as conn:
        assert conn.execute(select(Device)).all() == []
    # ... and the next good batch is stored as usual.
    assert store_events_payload(engine, "kiosk-01", _valid_payload()).ack == 2


def test_a_group_of_batches_is_stored_in_one_call_with_results_in_order(engine: Engine) -> None:
    from sync_server.ingest import ingest_batches

    store_batch(engine, batch("kiosk-01", range(1, 6)))
    group = [
        batch("locker-02", range(1, 4)),
        batch("kiosk-01", range(8, 11)),  # beyond a gap: stored, not yet acked
        batch("kiosk-01", range(4, 8)),  # 4-5 already stored, 6-7 fill the gap
        batch("locker-02", range(1, 4)),  # the same batch twice in one group
    ]
    results = ingest_batches(engine, group)
    assert [(r.device, r.stored, r.duplicates) for r in results] == [
        ("locker-02", 3, 0),
        ("kiosk-01", 3, 0),
        ("kiosk-01", 2, 2),
        ("locker-02", 0, 3),
    ]
    # Every result carries its device's ack after the whole group.
    assert [r.ack for r in results] == [3, 10, 10, 3]
    assert stored_seqs(engine, "kiosk-01") == list(range(1, 11))
    assert stored_seqs(engine, "locker-02") == [1, 2, 3]
    assert ingest_batches(engine, []) == []


def test_a_group_that_fails_stores_nothing_of_any_batch(engine: Engine) -> None:
    """A database trigger refuses locker-02's rows; kiosk-01's rows, inserted earlier in the same
    transaction (devices go in sorted order), must be rolled back with them."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from sync_server.ingest import ingest_batches

    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events "
                    "WHEN NEW.device_id = 'locker-02' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.device_id = 'locker-02' THEN RAISE EXCEPTION 'refused'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    with pytest.raises(SQLAlchemyError, match="refused"):
        ingest_batches(engine, [batch("locker-02", [1]), batch("kiosk-01", range(1, 4))])
    assert stored_seqs(engine, "kiosk-01") == []
    assert acked_seq(engine, "kiosk-01") == 0
