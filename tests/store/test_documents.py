"""Versioned documents, the resident cache, and no personal data in clear on disk."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from device.atrest import AtRestError, DeviceKey
from device.store import (
    DocumentError,
    DocumentVersionError,
    ResidentCache,
    StaleDocumentError,
    Store,
    UnknownDocumentError,
    open_store,
)
from kiosk_ui.issuing import HouseholdDirectory
from tests.certificates.conftest import household_record

ID_A = "11010519491231002X"
ID_B = "310115195003021234"


def resident(id_number: str) -> dict[str, Any]:
    return {"id_number": id_number, "household": household_record()}


class _Id:
    """Just the part of an Identity the directory reads."""

    def __init__(self, id_number: str) -> None:
        self.id_number = id_number


def test_delta_applies_atomically_in_order(store: Store) -> None:
    docs = store.documents
    assert docs.version("notices") == 0
    docs.apply_snapshot("notices", 3, {"n1": {"title": "停水"}, "n2": {"title": "体检"}})
    docs.apply_delta("notices", 3, 5, {"n3": {"title": "疫苗"}}, ["n1"])
    assert docs.version("notices") == 5
    assert dict(docs.items("notices")) == {"n2": {"title": "体检"}, "n3": {"title": "疫苗"}}


def test_delta_from_another_version_is_refused_and_changes_nothing(store: Store) -> None:
    docs = store.documents
    docs.apply_snapshot("catalogue", 2, {"a": 1})
    with pytest.raises(DocumentVersionError, match="request a snapshot") as info:
        docs.apply_delta("catalogue", 1, 4, {"b": 2})
    assert (info.value.current, info.value.from_version) == (2, 1)
    with pytest.raises(StaleDocumentError):
        docs.apply_delta("catalogue", 1, 2, {"b": 2})
    with pytest.raises(StaleDocumentError):
        docs.apply_snapshot("catalogue", 1, {})
    assert docs.version("catalogue") == 2 and dict(docs.items("catalogue")) == {"a": 1}


def test_failing_item_rolls_back_the_whole_delta(store: Store) -> None:
    docs = store.documents
    docs.apply_snapshot("residents", 1, {ID_A: resident(ID_A)})
    bad = {ID_B: resident(ID_B), "123": {"id_number": "999", "household": {}}}
    with pytest.raises(DocumentError, match="differs from its key"):
        docs.apply_delta("residents", 1, 2, bad, [ID_A])
    assert docs.version("residents") == 1
    assert docs.get("residents", ID_A) == resident(ID_A)
    assert docs.get("residents", ID_B) is None


def test_unknown_document_and_backward_delta(store: Store) -> None:
    with pytest.raises(UnknownDocumentError, match="residents"):
        store.documents.version("secrets")
    with pytest.raises(DocumentError, match="not forward"):
        store.documents.apply_delta("config", 3, 3, {})


def test_resident_lookup_by_id_number(store: Store) -> None:
    store.documents.apply_snapshot("residents", 1, {ID_A: resident(ID_A)})
    directory: HouseholdDirectory = ResidentCache(store)  # the kiosk's protocol
    cache = ResidentCache(store)
    assert isinstance(directory, ResidentCache)
    assert cache.household_for(_Id(ID_A)) == household_record()
    assert cache.household_for(_Id(ID_A.lower())) == household_record()
    assert cache.household_for(_Id(ID_B)) is None
    assert len(ResidentCache(store)) == 1


def test_lookup_hash_depends_on_the_device_key(db_path: Path, tmp_path: Path) -> None:
    with (
        open_store(db_path, key=DeviceKey.generate()) as a,
        open_store(tmp_path / "other.db", key=DeviceKey.generate()) as b,
    ):
        assert a.documents.lookup_hash(ID_A) != b.documents.lookup_hash(ID_A)
        assert len(a.documents.lookup_hash(ID_A)) == 64


def test_sealed_record_moved_to_another_row_does_not_open(store: Store) -> None:
    store.documents.apply_snapshot("residents", 1, {ID_A: resident(ID_A), ID_B: resident(ID_B)})
    hash_a, hash_b = (store.documents.lookup_hash(i) for i in (ID_A, ID_B))
    with store.transaction() as tx:
        body = tx.execute(
            "SELECT body FROM doc_items WHERE doc='residents' AND key=?", (hash_a,)
        ).fetchone()[0]
        tx.execute("UPDATE doc_items SET body=? WHERE key=?", (body, hash_b))
    with pytest.raises(AtRestError):
        store.documents.get("residents", ID_B)


def test_no_personal_data_in_clear_in_the_files(db_path: Path, key: DeviceKey) -> None:
    record = resident(ID_A)
    secrets = [ID_A, ID_A[:17], "王伟", "李芳", "幸福路12号", "13800000000"]
    with open_store(db_path, key=key) as store:
        store.documents.apply_snapshot("residents", 1, {ID_A: record})
        other = copy.deepcopy(record)
        other["household"]["phone"] = "13800000000"
        store.documents.apply_delta("residents", 1, 2, {ID_A: other})
        with store.transaction() as tx:
            tx.emit("certificate.issued", {"id_number": ID_A, "name": "王伟"}, personal=True)
        assert ResidentCache(store).record_for(ID_A) == other
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        assert any(p.name.endswith("-wal") for p in files)
        raw = b"".join(p.read_bytes() for p in files)
    raw += db_path.read_bytes()  # after close: checkpointed into the main file
    for secret in secrets:
        assert secret.encode() not in raw, f"{secret!r} found in clear"
