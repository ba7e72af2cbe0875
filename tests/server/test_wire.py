"""The msgspec fast path for ``up/events`` accepts exactly what the pydantic schema accepts.

``device.protocol.parse_events`` defines a valid batch; ``sync_server.wire.parse_events_fast``
must never accept a payload it refuses, must carry the same fields when both accept, and must
raise its very error otherwise. Checked on hand-picked edge cases and on generated payloads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.protocol import MAX_SEQ, EventBatch, MessageError, parse_events
from sync_server.wire import WireBatch, parse_events_fast, raw_text

ID = "0123456789abcdef" * 2


def _event(seq: int = 1, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"seq": seq, "id": ID, "type": "door.opened", "at": 1.5, "data": {}}
    event.update(changes)
    return event


def _batch(*events: dict[str, Any], **changes: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {"device": "locker-01", "boot": 3, "events": list(events) or [_event()]}
    batch.update(changes)
    return batch


def _same_outcome(payload: bytes) -> None:
    try:
        expected: EventBatch | None = parse_events(payload)
        error = None
    except MessageError as err:
        expected, error = None, err
    if expected is None:
        assert error is not None
        with pytest.raises(type(error)) as caught:
            parse_events_fast(payload)
        assert str(caught.value) == str(error)
        return
    got = parse_events_fast(payload)
    assert (got.device, got.boot) == (expected.device, expected.boot)
    assert len(got.events) == len(expected.events)
    for mine, theirs in zip(got.events, expected.events, strict=True):
        assert (mine.seq, mine.id, mine.type, mine.at) == (
            theirs.seq,
            theirs.id,
            theirs.type,
            theirs.at,
        )
        text = raw_text(mine.data)
        data = mine.data if text is None else json.loads(text)
        assert data == theirs.data


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


EDGE_CASES: list[bytes] = [
    _dumps(_batch()),
    _dumps(_batch(_event(1, data={"名字": "张三", "n": [1, 2.5, None, True]}))),
    _dumps(_batch(_event(1), _event(2), _event(5))),
    _dumps(_batch(device="locker-01\n")),
    _dumps(_batch(device="")),
    _dumps(_batch(device="a" * 65)),
    _dumps(_batch(device="a/b")),
    _dumps(_batch(boot=True)),
    _dumps(_batch(boot=0)),
    _dumps(_batch(boot=MAX_SEQ)),
    _dumps(_batch(boot=MAX_SEQ + 1)),
    _dumps(_batch(boot=1.0)),
    _dumps(_batch(boot="3")),
    _dumps(_batch(_event(1.0))),  # type: ignore[arg-type]
    _dumps(_batch(_event(0))),
    _dumps(_batch(_event(2**64))),
    _dumps(_batch(_event(2), _event(1))),
    _dumps(_batch(_event(1), _event(1))),
    _dumps(_batch(_event(1, id=ID.upper()))),
    _dumps(_batch(_event(1, id=ID + "\n"))),
    _dumps(_batch(_event(1, id=ID[:31]))),
    _dumps(_batch(_event(1, type="Door.opened"))),
    _dumps(_batch(_event(1, type="door.opened\n"))),
    _dumps(_batch(_event(1, type="a" * 65))),
    _dumps(_batch(_event(1, type="door..opened"))),
    _dumps(_batch(_event(1, at=-0.5))),
    _dumps(_batch(_event(1, at=0))),
    _dumps(_batch(_event(1, at=True))),
    _dumps(_batch(_event(1, at="1.5"))),
    _dumps(_batch(_event(1, data=[]))),
    _dumps(_batch(_event(1, data="{}"))),
    _dumps(_batch(_event(1, data=None))),
    _dumps(_batch(_event(1, extra=1))),
    _dumps(_batch(extra=1)),
    _dumps({"device": "locker-01", "boot": 3}),
    _dumps(_batch(events=[])),
    _dumps(_batch(*[_event(i) for i in range(1, 1002)])),
    _dumps([_batch()]),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1e400,'
    b'"data":{}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":NaN,'
    b'"data":{}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1,'
    b'"data":{"x":NaN}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1,'
    b'"data":{"x":"\xff"}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1,'
    b'"data": {"x" : 1} }]}' % ID.encode(),
    b'{"device":"x","device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a",'
    b'"at":1,"data":{}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1,'
    b'"data":{"x":"\\ud800"}}]}' % ID.encode(),
    b'{"device":"locker-01","boot":3,"events":[{"seq":1,"id":"%s","type":"a","at":1,"data":'
    % ID.encode()
    + b'{"a":' * 5000
    + b"1"
    + b"}" * 5000
    + b"}]}",
    b"\xef\xbb\xbf" + _dumps(_batch()),
    b"",
    b"null",
    b"{",
    b"x" * (256 * 1024 + 1),
]


@pytest.mark.parametrize("payload", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_fast_path_matches_the_schema_on_edge_cases(payload: bytes) -> None:
    _same_outcome(payload)


def test_a_valid_batch_takes_the_fast_path_and_keeps_data_as_sent() -> None:
    payload = _dumps(_batch(_event(1, data={"名字": "张三", "x": [1, {"y": None}]})))
    batch = parse_events_fast(payload)
    assert isinstance(batch, WireBatch)
    assert raw_text(batch.events[0].data) == '{"名字": "张三", "x": [1, {"y": null}]}'


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_ids = st.one_of(
    st.just(ID),
    st.text(alphabet="0123456789abcdefABCDEF\n", min_size=30, max_size=33),
)
_types = st.one_of(
    st.sampled_from(["door.opened", "a", "a.b_c.d9"]),
    st.from_regex(r"[a-zA-Z0-9._\n]{0,66}", fullmatch=True),
)
_events = st.fixed_dictionaries(
    {
        "seq": st.one_of(st.integers(min_value=-1, max_value=2**64), st.booleans(), _scalars),
        "id": st.one_of(_ids, _scalars),
        "type": st.one_of(_types, _scalars),
        "at": st.one_of(st.floats(allow_nan=False, allow_infinity=False), _scalars),
        "data": st.one_of(st.dictionaries(st.text(max_size=5), _json_values), _json_values),
    },
    optional={"extra": _scalars},
)
_batches = st.fixed_dictionaries(
    {
        "device": st.one_of(st.from_regex(r"[A-Za-z0-9_.\-/\n]{0,66}", fullmatch=True), _scalars),
        "boot": st.one_of(st.integers(min_value=-1, max_value=2**64), _scalars),
        "events": st.lists(_events, max_size=4),
    },
    optional={"extra": _scalars},
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches)
def test_fast_path_matches_the_schema_on_generated_batches(batch: dict[str, Any]) -> None:
    _same_outcome(_dumps(batch))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6, unique=True))
def test_fast_path_matches_the_schema_on_seq_orders(seqs: list[int]) -> None:
    _same_outcome(_dumps(_batch(*[_event(s) for s in seqs])))
