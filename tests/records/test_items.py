"""The ``residents`` document items for one community's kiosks: their exact format, that the
server's publisher accepts them, and that the kiosk side (the device store's ResidentCache, then
the shipped certificate templates) turns an item into a filled certificate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from device.atrest import DeviceKey
from device.idcard.identity import Identity
from device.store import ResidentCache, open_store
from kiosk_ui.certificates import MissingFieldError, load_templates
from kiosk_ui.certificates.fields import resolve_fields
from sync_server.documents import publish_version, snapshot
from sync_server.records import RecordMapping, community_items, import_records
from tests.records.conftest import HEADERS, TODAY, clock, make_id, row, write_csv

HEAD = make_id("19450312", 1)
SPOUSE = make_id("19500709", 2, male=False)
SON = make_id("19800101", 3)
MOTHER = make_id("19250101", 4, male=False)
OTHER = make_id("19600101", 5)
OTHER_SON = make_id("19900101", 7)
MOVED_AWAY = make_id("19700101", 6)


@pytest.fixture
def items(engine: Engine, mapping: RecordMapping, tmp_path: Path) -> dict[str, dict[str, Any]]:
    c01 = [
        row(SON, "王强", **{"与户主关系": "子", "联系电话": "13800000003"}),
        row(
            HEAD,
            "王伟",
            **{
                "与户主关系": "户主",
                "联系电话": "13800000001",
                "居住起始日期": "2010-05-01",
                "补贴档次": "80-89周岁档",
                "困难原因": "家庭成员患重病",
                "家庭人均月收入": 860,
            },
        ),
        row(SPOUSE, "李芳", address=None, **{"与户主关系": "配偶"}),
        row(MOTHER, "张氏", address=None, **{"与户主关系": "母亲"}),
        row(OTHER, "赵六", household="H002", address="幸福路14号"),
        row(OTHER_SON, "赵小六", household="H002", address=None),
    ]
    headers = [*HEADERS, "困难原因", "家庭人均月收入"]
    import_records(
        engine, write_csv(tmp_path / "c01.csv", c01, headers=headers), mapping, "C01", clock=clock
    )
    c02 = [row(MOVED_AWAY, "钱七", household="P01", address="和平路")]
    import_records(engine, write_csv(tmp_path / "c02.csv", c02), mapping, "C02", clock=clock)
    return community_items(engine, "C01")


def test_items_format(items: dict[str, dict[str, Any]]) -> None:
    assert set(items) == {
        HEAD,
        SPOUSE,
        SON,
        MOTHER,
        OTHER,
        OTHER_SON,
    }  # C02's resident is not sent here
    assert items[HEAD] == {
        "id_number": HEAD,
        "household": {
            "household_id": "H001",
            "address": "幸福路12号3栋501室",
            "residence_since": "2010-05-01",
            "phone": "13800000001",
            "subsidy_year": None,  # never certified (the kiosk says so, docs/kiosk-session.md)
            "elderly": {"level": "80-89周岁档"},
            "difficulty": {"reason": "家庭成员患重病", "monthly_income": "860"},  # CSV: text
            "members": [
                {"name": "王伟", "relation": "本人", "gender": "男", "birth": "1945-03-12"},
                {"name": "张氏", "relation": "母亲", "gender": "女", "birth": "1925-01-01"},
                {"name": "李芳", "relation": "配偶", "gender": "女", "birth": "1950-07-09"},
                {"name": "王强", "relation": "子", "gender": "男", "birth": "1980-01-01"},
            ],
        },
    }
    spouse = items[SPOUSE]["household"]
    assert "phone" not in spouse and "elderly" not in spouse
    assert spouse["difficulty"] == {"reason": "家庭成员患重病", "monthly_income": "860"}
    assert [(m["name"], m["relation"]) for m in spouse["members"]] == [
        ("王伟", "户主"),
        ("张氏", "户主的母亲"),
        ("李芳", "本人"),
        ("王强", "户主的子"),
    ]
    assert items[OTHER]["household"]["members"] == [
        {"name": "赵六", "relation": "本人", "gender": "男", "birth": "1960-01-01"},
        {"name": "赵小六", "gender": "男", "birth": "1990-01-01"},  # no relation: none made up
    ]


def test_the_publisher_accepts_the_items(engine: Engine, items: dict[str, dict[str, Any]]) -> None:
    version = publish_version(engine, "residents", upserts=items, scope="C01")
    assert snapshot(engine, "residents", version, scope="C01").items == items


def identity(id_number: str, name: str, gender: str, birth: dt.date) -> Identity:
    return Identity(
        name=name,
        gender=gender,
        nation="汉",
        birth=birth,
        address="幸福路12号3栋501室",
        id_number=id_number,
        issuer="某公安分局",
        valid_from=dt.date(2016, 1, 1),
        valid_to=None,
    )


def test_a_kiosk_fills_certificates_from_an_item(
    items: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The item goes through the device store (sealed, looked up by keyed hash) exactly as a
    ``down/sync`` snapshot would put it there; the kiosk's ResidentCache gives the household
    record and the shipped templates resolve every field from it."""
    store = open_store(tmp_path / "store.db", key=DeviceKey.generate())
    try:
        store.documents.apply_snapshot("residents", 1, items)
        cache = ResidentCache(store)
        head = identity(HEAD, "王伟", "男", dt.date(1945, 3, 12))
        household = cache.household_for(head)
        assert household is not None
        templates = load_templates()
        values = {
            name: resolve_fields(
                templates[name], head, household, community="幸福社区", today=TODAY, serial="S-1"
            )
            for name in ("residence", "family_relationship", "elderly_subsidy", "difficulty")
        }
        assert values["residence"]["address"] == "幸福路12号3栋501室"
        assert values["residence"]["residence_since"] == "2010年5月1日"
        assert values["elderly_subsidy"]["level"] == "80-89周岁档"
        assert values["elderly_subsidy"]["phone"] == "13800000001"
        assert values["difficulty"]["member_count"] == "4"
        rows = values["family_relationship"]["members"]
        assert isinstance(rows, list)
        assert rows[0] == {
            "name": "王伟",
            "relation": "本人",
            "gender": "男",
            "birth": "1945年3月12日",
        }

        # A member without a relation cannot get a family-relationship certificate: the kiosk
        # says what is missing instead of printing a blank.
        other = cache.household_for(identity(OTHER, "赵六", "男", dt.date(1960, 1, 1)))
        assert other is not None
        with pytest.raises(MissingFieldError, match="与本人关系"):
            resolve_fields(
                templates["family_relationship"],
                identity(OTHER, "赵六", "男", dt.date(1960, 1, 1)),
                other,
                community="幸福社区",
                today=TODAY,
                serial="S-2",
            )
    finally:
        store.close()
