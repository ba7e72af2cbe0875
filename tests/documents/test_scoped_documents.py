"""Documents kept per community (``residents``), on SQLite and PostgreSQL: each community has
its own history, version numbers never name two communities' versions, a kiosk holding another
community's version is brought onto its own, concurrent publishers of two communities, the
request handler's choice of history (service points), and the 0003 migration both ways."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, inspect

from device.protocol import DocumentSnapshot, SyncRequest, parse_sync
from sync_server.db import downgrade, make_engine, upgrade
from sync_server.documents import (
    DocumentChangedError,
    DocumentScopeError,
    DocumentServer,
    NoSuchVersionError,
    answer,
    latest_version,
    publish_version,
    scopes,
    snapshot,
)
from tests.server.conftest import new_database

from .conftest import ID_NUMBERS, add_areas, register, resident, revoke

A, B = "C01", "C02"
A_IDS, B_IDS = ID_NUMBERS[:2], ID_NUMBERS[2:]


def ask(engine: Engine, scope: str, version: int, **kw: Any) -> list[Any]:
    request = SyncRequest(doc="residents", version=version)
    return answer(engine, request, scope=scope, **kw)


def publish(engine: Engine, scope: str, *numbers: str, **changes: Any) -> int:
    upserts = {n: resident(n, **changes) for n in numbers}
    return publish_version(engine, "residents", upserts=upserts, scope=scope)


def test_each_community_has_its_own_history_and_numbers_are_never_shared(
    server_engine: Engine,
) -> None:
    e = server_engine
    assert publish(e, A, A_IDS[0]) == 1
    assert publish(e, B, *B_IDS) == 2
    assert publish(e, A, A_IDS[1]) == 3
    assert publish_version(e, "residents", upserts={}, deletes=[A_IDS[0]], scope=A) == 4
    assert (latest_version(e, "residents", scope=A), latest_version(e, "residents", scope=B)) == (
        4,
        2,
    )
    assert snapshot(e, "residents", scope=A).items == {A_IDS[1]: resident(A_IDS[1])}
    assert snapshot(e, "residents", 3, scope=A).items.keys() == set(A_IDS)
    assert snapshot(e, "residents", scope=B).items.keys() == set(B_IDS)
    with pytest.raises(NoSuchVersionError, match=r"residents\[C02\] has no version 3"):
        snapshot(e, "residents", 3, scope=B)  # version 3 is A's
    # A kiosk of A behind by two versions gets A's deltas, linked across B's number.
    chain = ask(e, A, 1)
    assert [(d.kind, d.from_version, d.version) for d in chain] == [
        ("delta", 1, 3),
        ("delta", 3, 4),
    ]
    assert all(not set(d.upserts) & set(B_IDS) for d in chain)
    # B's kiosks are current although A published after them; a new one gets B's snapshot.
    assert ask(e, B, 2) == []
    (fresh,) = ask(e, B, 0)
    assert isinstance(fresh, DocumentSnapshot) and fresh.items.keys() == set(B_IDS)
    assert scopes(e, "residents") == [A, B] and scopes(e, "catalogue") == []
    # The global documents number on their own.
    assert publish_version(e, "catalogue", upserts={"svc": {"fee": 0}}) == 1


def test_a_kiosk_holding_another_communitys_version_gets_its_own_community_whole(
    server_engine: Engine,
) -> None:
    """A kiosk moved from A to B (or synced before documents had scopes) asks B with A's
    number: it must end with exactly B's records, never a mix."""
    e = server_engine
    publish(e, B, B_IDS[0])  # B: 1
    publish(e, A, *A_IDS)  # A: 2
    publish(e, A, A_IDS[0], phone="13900000000")  # A: 3
    (snap,) = ask(e, B, 3)  # A's newest, above anything B has: B moves above it
    assert isinstance(snap, DocumentSnapshot)
    assert snap.version == 4 and snap.items == {B_IDS[0]: resident(B_IDS[0])}
    assert ask(e, B, 4) == []
    (inside,) = ask(e, B, 2)  # A's older version, below B's newest: not in B's history
    assert isinstance(inside, DocumentSnapshot) and inside.version == 4
    # A community that never published empties the kiosk instead of leaving A's records.
    (empty,) = ask(e, "C03", 3)
    assert isinstance(empty, DocumentSnapshot) and (empty.version, empty.items) == (5, {})
    assert ask(e, "C04", 0) == []  # a fresh kiosk of a community never published: nothing
    # Every message is one a device accepts.
    for message in (snap, inside, empty):
        assert parse_sync(message.model_dump_json().encode()) == message


def test_scopes_are_required_exactly_where_documents_have_them(server_engine: Engine) -> None:
    e = server_engine
    item = {ID_NUMBERS[0]: resident(ID_NUMBERS[0])}
    for bad in ("", " C01", "C" * 33):
        with pytest.raises(DocumentScopeError, match="kept per community"):
            publish_version(e, "residents", upserts=item, scope=bad)
    with pytest.raises(DocumentScopeError, match="kept per community"):
        latest_version(e, "residents")
    with pytest.raises(DocumentScopeError, match="kept per community"):
        answer(e, SyncRequest(doc="residents", version=0))
    with pytest.raises(DocumentScopeError, match="one document for every device"):
        publish_version(e, "notices", upserts={"n": {}}, scope=A)
    with pytest.raises(DocumentScopeError, match="one document for every device"):
        snapshot(e, "notices", scope=A)
    assert scopes(e, "residents") == []


def test_if_version_refuses_a_change_computed_from_an_older_version(server_engine: Engine) -> None:
    e = server_engine
    base = publish(e, A, A_IDS[0])
    publish(e, A, A_IDS[1])
    with pytest.raises(DocumentChangedError, match="at version 2, not 1"):
        publish_version(e, "residents", upserts={}, deletes=[A_IDS[0]], scope=A, if_version=base)
    assert latest_version(e, "residents", scope=A) == 2
    assert publish_version(e, "residents", upserts={}, deletes=[A_IDS[0]], scope=A, if_version=2)


def test_concurrent_publishes_to_two_communities(server_engine: Engine) -> None:
    """Three writers per community at once: every number taken once, each community's history
    a chain from version to version holding only its own items, nobody deadlocked."""
    e = server_engine
    got: dict[str, list[int]] = {A: [], B: []}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(scope: str, w: int) -> None:
        try:
            for i in range(5):
                key = f"{110101194001010000 + 100 * w + i}" if scope == A else f"{w:02d}{i:016d}"
                version = publish(e, scope, key)
                with lock:
                    got[scope].append(version)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(s, w)) for s in (A, B) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a writer is stuck (deadlock?)"
    assert not errors, errors
    assert sorted(got[A] + got[B]) == list(range(1, 31))
    for scope in (A, B):
        items = snapshot(e, "residents", scope=scope).items
        assert len(items) == 15
        assert all(k.startswith("1101011940") == (scope == A) for k in items)
        versions = sorted(got[scope])
        chain = ask(e, scope, versions[0], max_deltas=100)
        assert [d.version for d in chain] == versions[1:]
        assert [d.from_version for d in chain] == versions[:-1]


# ------------------------------------------------------------------------- the request handler


def _request(doc: str, version: int) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=b"linli/v1/dev/x/up/sync-req")
    msg.payload = f'{{"doc":"{doc}","version":{version}}}'.encode()
    return msg


def test_the_handler_answers_residents_from_the_kiosks_community_only(
    server_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    e = server_engine
    add_areas(e)
    register(e, "kiosk-a", A)
    register(e, "kiosk-b", B)
    register(e, "kiosk-gone", A)
    revoke(e, "kiosk-gone")
    register(e, "locker-1", A, kind="locker")
    publish(e, A, *A_IDS)
    publish(e, B, *B_IDS)
    publish_version(e, "notices", upserts={"n1": {"title": "停水"}})
    sent: list[tuple[str, Any]] = []

    def publish_down(device: str, suffix: str, payload: bytes) -> bool:
        assert suffix == "down/sync"
        sent.append((device, parse_sync(payload)))
        return True

    handler = DocumentServer(e, publish=publish_down)
    caplog.set_level(logging.DEBUG, logger="sync_server.documents")
    for device in ("kiosk-a", "kiosk-b", "kiosk-gone", "locker-1", "kiosk-new"):
        for _ in range(2):  # every device asks on every connect
            handler.handle_request(device, _request("residents", 0))
        handler.handle_request(device, _request("notices", 0))
    residents = {d: m.items.keys() for d, m in sent if m.doc == "residents"}
    assert residents == {"kiosk-a": set(A_IDS), "kiosk-b": set(B_IDS)}
    assert [d for d, m in sent if m.doc == "residents"].count("kiosk-a") == 2
    notices = sorted(d for d, m in sent if m.doc == "notices")
    assert notices == ["kiosk-a", "kiosk-b", "kiosk-gone", "kiosk-new", "locker-1"]
    refusals = [r for r in caplog.records if "not answered" in r.getMessage()]
    assert [(r.getMessage().split(":")[0], r.levelname) for r in refusals] == [
        ("device kiosk-gone", "WARNING"),
        ("device locker-1", "INFO"),
        ("device kiosk-new", "WARNING"),
    ]
    assert "is revoked" in refusals[0].getMessage()
    assert "has no service point" in refusals[2].getMessage()
    # A kiosk moved to another community gets that community's records, whole.
    with e.begin() as conn:
        conn.execute(
            sa.text("UPDATE service_points SET area_id = :b WHERE device_id = 'kiosk-a'"), {"b": B}
        )
    sent.clear()
    handler.handle_request("kiosk-a", _request("residents", 1))  # A's version 1
    ((device, moved),) = sent
    assert isinstance(moved, DocumentSnapshot) and moved.items.keys() == set(B_IDS)
    assert moved.version > 1


# ------------------------------------------------------------------------- the migration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new database with no schema at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
    return new_database(request, "scope")


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    eng = make_engine(empty_url)
    yield eng
    eng.dispose()


_legacy = sa.table(
    "documents",
    sa.column("doc", sa.String),
    sa.column("version", sa.BigInteger),
    sa.column("payload", sa.JSON),
    sa.column("created", sa.Double),
)


def _legacy_row(doc: str, version: int, upserts: dict[str, Any]) -> dict[str, Any]:
    payload = {"from_version": version - 1, "upserts": upserts, "deletes": []}
    return {"doc": doc, "version": version, "payload": payload, "created": 1.0}


def test_migration_0003_keeps_the_old_histories_and_goes_back(empty_engine: Engine) -> None:
    e = empty_engine
    upgrade(e, "0002")
    legacy = ID_NUMBERS[0]
    with e.begin() as conn:  # a server before scopes: one residents history for every kiosk
        conn.execute(
            sa.insert(_legacy),
            [
                _legacy_row("notices", 1, {"n1": {"title": "停水"}}),
                _legacy_row("residents", 1, {legacy: resident(legacy)}),
                _legacy_row("residents", 2, {legacy: resident(legacy, phone="13900000000")}),
            ],
        )
    upgrade(e)
    assert inspect(e).get_pk_constraint("documents")["constrained_columns"] == [
        "doc",
        "scope",
        "version",
    ]
    assert snapshot(e, "notices").items == {"n1": {"title": "停水"}}  # global: unchanged
    assert publish_version(e, "notices", upserts={"n2": {}}) == 2
    # The first community version is numbered above the old residents history, so a kiosk
    # holding the old version 2 gets its community's records whole, not a delta on top.
    assert publish(e, A, A_IDS[0]) == 3
    (snap,) = ask(e, A, 2)
    assert isinstance(snap, DocumentSnapshot) and snap.items.keys() == {A_IDS[0]}
    assert ask(e, A, 3) == []
    downgrade(e, "0002")
    columns = {c["name"] for c in inspect(e).get_columns("documents")}
    assert "scope" not in columns
    assert inspect(e).get_pk_constraint("documents")["constrained_columns"] == ["doc", "version"]
    with e.connect() as conn:
        rows = conn.execute(sa.select(_legacy.c.doc, _legacy.c.version)).all()
    # The communities' rows are gone (the old schema would mix them); the rest is kept.
    assert sorted((str(d), int(v)) for d, v in rows) == [
        ("notices", 1),
        ("notices", 2),
        ("residents", 1),
        ("residents", 2),
    ]
    upgrade(e)
    assert latest_version(e, "residents", scope=A) == 0
    assert publish(e, A, A_IDS[1]) == 3
