"""``residents.lookup`` (异地通办): a kiosk asks the server for a resident its cache lacks."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert, select

from sync_server.domain_models import AuditEntry, ServicePoint
from sync_server.records.lookup import residents_lookup
from sync_server.rpc import RpcMethodError
from tests.records.conftest import NOW
from tests.records.test_query import CERTIFIED, ELSEWHERE, loaded  # noqa: F401


@pytest.fixture
def lookup(loaded: Engine):  # noqa: F811
    with loaded.begin() as conn:
        for device, kind, revoked in (("kiosk-1", "kiosk", None), ("kiosk-old", "kiosk", NOW),
                                      ("locker-1", "locker", None)):  # fmt: skip
            conn.execute(insert(ServicePoint).values(
                device_id=device, kind=kind, name=device, area_id="C01", created=NOW,
                revoked_at=revoked))  # fmt: skip
    return residents_lookup(loaded, clock=lambda: NOW)


def test_a_kiosk_gets_a_resident_of_another_community(lookup, loaded: Engine) -> None:  # noqa: F811
    item = lookup("kiosk-1", {"id_number": ELSEWHERE.lower()})
    assert item["id_number"] == ELSEWHERE
    household = item["household"]
    assert household["household_id"] == "P01" and household["address"] == "和平路"
    assert [m["name"] for m in household["members"]] == ["吴九"]
    with loaded.connect() as conn:
        detail = conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "residents.lookup")
        ).scalar_one()
    assert detail == {"found": True} and ELSEWHERE not in str(detail)


def test_the_subsidy_year_reaches_the_kiosk(lookup) -> None:
    assert lookup("kiosk-1", {"id_number": CERTIFIED})["household"]["subsidy_year"] == 2026


@pytest.mark.parametrize(
    ("device", "params", "code"),
    [
        ("kiosk-1", {"id_number": "110105194603150011"}, "bad-id-number"),
        ("kiosk-1", {"id_number": 110105}, "bad-request"),
        ("kiosk-1", {"id": "x"}, "bad-request"),
        ("locker-1", {"id_number": ELSEWHERE}, "forbidden"),
        ("kiosk-old", {"id_number": ELSEWHERE}, "forbidden"),
        ("stranger", {"id_number": ELSEWHERE}, "forbidden"),
    ],
)
def test_refusals(lookup, loaded: Engine, device: str, params: dict, code: str) -> None:  # noqa: F811
    with pytest.raises(RpcMethodError) as err:
        lookup(device, params)
    assert err.value.code == code


def test_an_unknown_resident_is_not_found_and_audited(lookup, loaded: Engine) -> None:  # noqa: F811
    from tests.records.conftest import make_id

    with pytest.raises(RpcMethodError) as err:
        lookup("kiosk-1", {"id_number": make_id("19300101", 99)})
    assert err.value.code == "not-found"
    with loaded.connect() as conn:
        assert conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "residents.lookup")
        ).scalar_one() == {"found": False}
