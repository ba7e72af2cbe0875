"""Protocol schemas: messages round-trip; garbage, bad shapes and oversize are typed errors."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from device.config import DeviceSection
from device.errors import ProtocolError
from device.protocol import (
    MAX_ACK_BYTES,
    MAX_EVENTS_BATCH_BYTES,
    Ack,
    DocumentDelta,
    DocumentSnapshot,
    EventBatch,
    MessageError,
    NotJSONError,
    OversizeError,
    SchemaError,
    encode,
    parse_ack,
    parse_events,
    parse_sync,
    parse_sync_request,
    topic,
    valid_device_id,
)
from device.store import Store

PARSERS = [parse_events, parse_ack, parse_sync, parse_sync_request]


def batch(**overrides: Any) -> dict[str, Any]:
    event = {"seq": 1, "id": "a" * 32, "type": "compartment.opened", "at": 1.5, "data": {}}
    return {"device": "locker-01", "boot": 2, "events": [event]} | overrides


def test_outbox_events_make_a_valid_batch(store: Store) -> None:
    with store.transaction() as tx:
        tx.emit("compartment.opened", {"compartment": 3})
        tx.emit("resident.identified", {"name": "王伟"}, personal=True)
    body = {
        "device": "locker-01",
        "boot": store.boot,
        "events": [e.wire() for e in store.outbox.pending()],
    }
    parsed = parse_events(json.dumps(body).encode())
    assert [e.seq for e in parsed.events] == [1, 2]
    assert parse_events(encode(parsed)) == parsed


def test_ack_and_sync_round_trip() -> None:
    assert parse_ack(b'{"seq": 42}') == Ack(seq=42)
    delta = parse_sync(
        b'{"kind":"delta","doc":"notices","from_version":1,"version":2,'
        b'"upserts":{"n1":{"t":"x"}},"deletes":["n0"]}'
    )
    assert isinstance(delta, DocumentDelta) and delta.deletes == ["n0"]
    snap = parse_sync(b'{"kind":"snapshot","doc":"residents","version":7,"items":{}}')
    assert isinstance(snap, DocumentSnapshot) and snap.version == 7
    assert parse_sync_request(b'{"doc":"config","version":0}').version == 0


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xff\xfe", NotJSONError),
        (b"{not json", NotJSONError),
        (b'{"seq": NaN}', NotJSONError),
        (b'{"seq": "3"}', SchemaError),
        (b'{"seq": true}', SchemaError),
        (b'{"seq": -1}', SchemaError),
        (b'{"seq": 1, "extra": 2}', SchemaError),
        (b"[]", SchemaError),
        (b" " * (MAX_ACK_BYTES + 1), OversizeError),
    ],
)
def test_bad_acks_are_typed_errors(payload: bytes, error: type[MessageError]) -> None:
    with pytest.raises(error):
        parse_ack(payload)


@pytest.mark.parametrize(
    "body",
    [
        batch(device="bad/id"),
        batch(device="+"),
        batch(boot=0),
        batch(events=[]),
        batch(events=[batch()["events"][0], batch()["events"][0]]),  # seq not increasing
        batch(events=[batch()["events"][0] | {"at": "now"}]),
        batch(events=[batch()["events"][0] | {"id": "short"}]),
        batch(events=[batch()["events"][0] | {"seq": 2**63}]),
    ],
)
def test_bad_batches_are_schema_errors(body: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        parse_events(json.dumps(body).encode())


def test_schema_errors_do_not_echo_values() -> None:
    body = batch(events=[batch()["events"][0] | {"at": "王伟 11010519491231002X"}])
    with pytest.raises(SchemaError) as info:
        parse_events(json.dumps(body, ensure_ascii=False).encode())
    assert "王伟" not in str(info.value) and "1101051949" not in str(info.value)
    assert "events.0.at" in str(info.value)


def test_deep_nesting_is_not_json() -> None:
    with pytest.raises(NotJSONError, match="nests too deeply"):
        parse_events(b"[" * 50_000 + b"]" * 50_000)


def test_oversize_batch_is_refused_before_parsing() -> None:
    with pytest.raises(OversizeError, match="at most"):
        parse_events(b"{" + b" " * MAX_EVENTS_BATCH_BYTES + b"}")


def test_sync_delta_must_move_forward() -> None:
    with pytest.raises(SchemaError, match="greater"):
        parse_sync(b'{"kind":"delta","doc":"notices","from_version":2,"version":2}')
    with pytest.raises(SchemaError):
        parse_sync(b'{"kind":"patch","doc":"notices","version":2}')


def test_topics() -> None:
    assert topic("kiosk-01", "up/events") == "linli/v1/dev/kiosk-01/up/events"
    for bad in ["", "a/b", "+", "#", "a b", "x" * 65]:
        with pytest.raises(MessageError):
            topic(bad, "up/events")
    with pytest.raises(MessageError, match="unknown topic"):
        topic("kiosk-01", "up/secrets")


@given(st.text(max_size=70))
def test_device_id_rule_matches_the_config(device_id: str) -> None:
    try:
        DeviceSection(id=device_id, kind="kiosk")
        config_ok = True
    except ValidationError:
        config_ok = False
    assert valid_device_id(device_id) == config_ok


@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_typed_errors(payload: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(ProtocolError):
            parse(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_random_json_only_raises_typed_errors(value: Any) -> None:
    payload = json.dumps(value).encode()
    for parse in PARSERS:
        with contextlib.suppress(ProtocolError):
            parse(payload)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_ack_round_trip(seq: int) -> None:
    assert parse_ack(encode(Ack(seq=seq))).seq == seq


def test_event_batch_model_is_exported() -> None:
    assert EventBatch.model_json_schema()["title"] == "EventBatch"


def test_schema_errors_never_quote_payload_keys() -> None:
    """An unexpected field's name (here an ID number) is payload text: the error, which is
    logged, names where the problem is as ``<key>`` instead."""
    import json as _json

    from device.protocol import SchemaError as _SchemaError
    from device.protocol import parse_events as _parse_events

    secret = "110101199003077777"
    payload = _json.dumps(
        {
            "device": "d",
            "boot": 1,
            "events": [{"seq": 1, "id": "a" * 32, "type": "x", "at": 1.0, "data": {}, secret: 1}],
        }
    ).encode()
    with pytest.raises(_SchemaError) as caught:
        _parse_events(payload)
    assert secret not in str(caught.value)
    assert "events.0.<key>" in str(caught.value)
