"""Server side of versioned documents on SQLite and PostgreSQL: versions, snapshots, answers."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine, select

from device.protocol import (
    MAX_SYNC_BYTES,
    DocumentDelta,
    DocumentSnapshot,
    MessageError,
    SyncRequest,
    parse_sync,
)
from sync_server.documents import (
    CHECKPOINT_EVERY,
    MAX_AHEAD,
    DocumentPublishError,
    DocumentServer,
    DocumentTooLargeError,
    NoSuchVersionError,
    VersionAheadError,
    answer,
    latest_version,
    publish_version,
    rebase,
    snapshot,
)
from sync_server.models import Document

from .conftest import ID_NUMBERS, resident


def ask(engine: Engine, doc: str, version: int, **limits: Any) -> list[Any]:
    return answer(engine, SyncRequest(doc=doc, version=version), **limits)  # type: ignore[arg-type]


def scope_of(doc: str) -> str:
    """residents is kept per community (tests/documents/test_scoped_documents.py)."""
    return "C01" if doc == "residents" else ""


def fold(items: dict[str, Any], delta: DocumentDelta) -> dict[str, Any]:
    out = {k: v for k, v in items.items() if k not in delta.deletes}
    out.update(delta.upserts)
    return out


def publish_catalogue(engine: Engine, count: int) -> None:
    """Versions 1..count: item ``s<i>`` added at version i, ``s<i-2>`` deleted at version i."""
    for i in range(1, count + 1):
        deletes = [f"s{i - 2}"] if i > 2 else []
        publish_version(engine, "catalogue", upserts={f"s{i}": {"fee": i}}, deletes=deletes)


def test_versions_count_up_and_snapshots_fold_upserts_and_deletes(server_engine: Engine) -> None:
    e = server_engine
    assert publish_version(e, "catalogue", upserts={"a": {"n": 1}, "b": {"n": 2}}) == 1
    assert publish_version(e, "catalogue", upserts={"b": {"n": 3}, "c": [4]}, deletes=["a"]) == 2
    assert publish_version(e, "catalogue", upserts={}, deletes=["c", "not-there"]) == 3
    assert latest_version(e, "catalogue") == 3 and latest_version(e, "notices") == 0
    assert snapshot(e, "catalogue").items == {"b": {"n": 3}}
    assert snapshot(e, "catalogue").version == 3
    assert snapshot(e, "catalogue", 1).items == {"a": {"n": 1}, "b": {"n": 2}}
    assert snapshot(e, "catalogue", 2).items == {"b": {"n": 3}, "c": [4]}
    with pytest.raises(NoSuchVersionError, match="no version 4"):
        snapshot(e, "catalogue", 4)
    with pytest.raises(NoSuchVersionError, match="newest: none"):
        snapshot(e, "notices")


def test_current_device_gets_nothing_and_fresh_device_a_snapshot(server_engine: Engine) -> None:
    publish_catalogue(server_engine, 3)
    assert ask(server_engine, "catalogue", 3) == []
    assert ask(server_engine, "notices", 0) == []  # never published
    (only,) = ask(server_engine, "catalogue", 0)
    assert isinstance(only, DocumentSnapshot)
    assert (only.version, only.items) == (3, {"s2": {"fee": 2}, "s3": {"fee": 3}})


def test_device_behind_gets_exactly_the_missing_deltas_in_order(server_engine: Engine) -> None:
    publish_catalogue(server_engine, 6)
    chain = ask(server_engine, "catalogue", 2)
    assert [(d.kind, d.from_version, d.version) for d in chain] == [
        ("delta", 2, 3),
        ("delta", 3, 4),
        ("delta", 4, 5),
        ("delta", 5, 6),
    ]
    items = snapshot(server_engine, "catalogue", 2).items
    for delta in chain:
        items = fold(items, delta)
    assert items == snapshot(server_engine, "catalogue").items
    assert chain[0].deletes == ["s1"] and chain[0].upserts == {"s3": {"fee": 3}}


def test_too_many_or_too_large_deltas_become_one_snapshot(server_engine: Engine) -> None:
    publish_catalogue(server_engine, 6)
    assert len(ask(server_engine, "catalogue", 3, max_deltas=3)) == 3
    (too_many,) = ask(server_engine, "catalogue", 2, max_deltas=3)
    assert isinstance(too_many, DocumentSnapshot) and too_many.version == 6
    (too_big,) = ask(server_engine, "catalogue", 2, max_chain_bytes=300)
    assert isinstance(too_big, DocumentSnapshot)
    assert too_big.items == snapshot(server_engine, "catalogue").items


def test_device_ahead_of_a_restored_server_is_moved_onto_the_server(server_engine: Engine) -> None:
    e = server_engine
    publish_catalogue(e, 3)
    (snap,) = ask(e, "catalogue", 7)  # the device saw versions this database has lost
    assert isinstance(snap, DocumentSnapshot)
    assert snap.version == 8, "the device must take it: newer than its own version"
    assert snap.items == snapshot(e, "catalogue", 3).items
    assert latest_version(e, "catalogue") == 8
    assert ask(e, "catalogue", 8) == []
    # A device that is current on the server sees an empty delta across the jump.
    (jump,) = ask(e, "catalogue", 3)
    assert isinstance(jump, DocumentDelta)
    assert (jump.from_version, jump.version, jump.upserts, jump.deletes) == (3, 8, {}, [])
    # A version inside the jump is not in this history: snapshot.
    (inside,) = ask(e, "catalogue", 5)
    assert isinstance(inside, DocumentSnapshot) and inside.version == 8
    # Publishing carries on above the jump.
    assert publish_version(e, "catalogue", upserts={"x": 1}) == 9
    assert [d.version for d in ask(e, "catalogue", 3)] == [8, 9]
    with pytest.raises(VersionAheadError, match="ahead"):
        ask(e, "catalogue", 9 + MAX_AHEAD + 1)
    assert latest_version(e, "catalogue") == 9


def test_rebase_after_a_restore_moves_past_what_devices_reported(server_engine: Engine) -> None:
    publish_catalogue(server_engine, 2)
    assert rebase(server_engine, "catalogue", above=5) == 6
    assert rebase(server_engine, "catalogue", above=3) == 6  # already above: unchanged
    assert (
        snapshot(server_engine, "catalogue").items == snapshot(server_engine, "catalogue", 2).items
    )
    assert publish_version(server_engine, "catalogue", upserts={"new": 1}) == 7
    assert [d.version for d in ask(server_engine, "catalogue", 2)] == [6, 7]
    (snap,) = ask(server_engine, "catalogue", 5)  # a device that had the lost version 5
    assert isinstance(snap, DocumentSnapshot) and snap.version == 7


def test_device_with_a_document_this_server_never_had_gets_nothing(server_engine: Engine) -> None:
    assert ask(server_engine, "revocations", 4) == []
    assert latest_version(server_engine, "revocations") == 0


def test_concurrent_writers_never_share_a_version(server_engine: Engine) -> None:
    errors: list[BaseException] = []
    got: list[int] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            for i in range(6):
                v = publish_version(server_engine, "notices", upserts={f"w{w}-{i}": {"t": i}})
                with lock:
                    got.append(v)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(got) == list(range(1, 25))
    assert len(snapshot(server_engine, "notices").items) == 24
    assert [d.version for d in ask(server_engine, "notices", 0, max_deltas=100)] == [24]
    assert [d.version for d in ask(server_engine, "notices", 1, max_deltas=100)] == list(
        range(2, 25)
    )


def test_checkpoints_keep_snapshots_right_across_a_long_history(server_engine: Engine) -> None:
    count = CHECKPOINT_EVERY * 2 + 5
    publish_catalogue(server_engine, count)
    with server_engine.connect() as conn:
        found = conn.execute(
            select(Document.version, Document.payload).where(Document.doc == "catalogue")
        ).all()
    rows = {int(version): payload for version, payload in found}
    checkpoints = sorted(v for v, payload in rows.items() if "items" in payload)
    assert checkpoints == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY]
    for version in (1, CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 3, count):
        want = {f"s{i}": {"fee": i} for i in (version - 1, version) if i >= 1}
        assert snapshot(server_engine, "catalogue", version).items == want, version


BAD_CHANGES: list[tuple[str, dict[str, Any], Any, str]] = [
    ("secrets", {"a": 1}, [], "unknown document"),
    ("catalogue", {}, [], "at least one item"),
    ("catalogue", {"a": 1}, ["a"], "both upserted and deleted"),
    ("catalogue", {"": 1}, [], "key #1"),
    ("catalogue", {"k" * 257: 1}, [], "key #1"),
    ("catalogue", {"a": float("nan")}, [], "not JSON"),
    ("catalogue", {"a": {1, 2}}, [], "not JSON"),
    ("catalogue", {"a": 1}, "a", "not one string"),
    ("residents", {ID_NUMBERS[0].lower(): resident(ID_NUMBERS[0])}, [], "upper-case X"),
    ("residents", {ID_NUMBERS[1]: resident(ID_NUMBERS[2])}, [], "different from its key"),
    ("residents", {ID_NUMBERS[1]: {"id_number": ID_NUMBERS[1]}}, [], "household"),
    ("residents", {}, [f" {ID_NUMBERS[1]}"], "surrounding blanks"),
]


@pytest.mark.parametrize(("doc", "upserts", "deletes", "why"), BAD_CHANGES)
def test_invalid_versions_are_refused_and_nothing_is_stored(
    server_engine: Engine, doc: str, upserts: dict[str, Any], deletes: Any, why: str
) -> None:
    scope = scope_of(doc)
    with pytest.raises(DocumentPublishError, match=why) as info:
        publish_version(server_engine, doc, upserts=upserts, deletes=deletes, scope=scope)
    assert not any(number.lower() in str(info.value).lower() for number in ID_NUMBERS)
    if doc != "secrets":
        assert latest_version(server_engine, doc, scope=scope) == 0


def test_every_published_version_parses_on_the_device(server_engine: Engine) -> None:
    e, c01 = server_engine, "C01"
    publish_version(e, "residents", upserts={n: resident(n) for n in ID_NUMBERS}, scope=c01)
    publish_version(e, "residents", upserts={}, deletes=[ID_NUMBERS[0]], scope=c01)
    for message in [*ask(e, "residents", 0, scope=c01), *ask(e, "residents", 1, scope=c01)]:
        assert parse_sync(message.model_dump_json().encode()) == message


def test_a_document_too_large_for_one_message_is_refused(tmp_path: Any) -> None:
    from sync_server.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path}/big.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        with pytest.raises(DocumentTooLargeError, match="several smaller versions"):
            publish_version(engine, "notices", upserts={"big": "x" * MAX_SYNC_BYTES})
        half = MAX_SYNC_BYTES // 2 + 1024
        assert publish_version(engine, "notices", upserts={"a": "x" * half}) == 1
        with pytest.raises(DocumentTooLargeError, match="whole document"):
            publish_version(engine, "notices", upserts={"b": "y" * half})
        assert latest_version(engine, "notices") == 1
        assert publish_version(engine, "notices", upserts={"b": "y" * half}, deletes=["a"]) == 2
    finally:
        engine.dispose()


def _message(payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=b"linli/v1/dev/dev-a/up/sync-req")
    msg.payload = payload
    return msg


def test_handler_answers_on_down_sync_and_refuses_bad_requests(server_engine: Engine) -> None:
    publish_catalogue(server_engine, 2)
    sent: list[tuple[str, str, bytes]] = []

    def publish(device: str, suffix: str, payload: bytes) -> bool:
        sent.append((device, suffix, payload))
        return True

    handler = DocumentServer(server_engine, publish=publish)
    handler.handle_request("dev-a", _message(b'{"doc":"catalogue","version":1}'))
    assert [(d, s) for d, s, _ in sent] == [("dev-a", "down/sync")]
    delta = parse_sync(sent[0][2])
    assert isinstance(delta, DocumentDelta) and (delta.from_version, delta.version) == (1, 2)
    secret = ID_NUMBERS[1]
    for bad in (
        b"\xff\xfe garbage",
        b'{"doc":"catalogue"}',
        b'{"doc":"secrets","version":1}',
        b'{"doc":"catalogue","version":-1}',
        b'{"doc":"catalogue","version":1,"' + secret.encode() + b'":1}',
        b'{"doc":"catalogue","version":1,"pad":"' + b"x" * 2000 + b'"}',
    ):
        with pytest.raises(MessageError) as info:
            handler.handle_request("dev-a", _message(bad))
        assert secret not in str(info.value)
    assert len(sent) == 1
