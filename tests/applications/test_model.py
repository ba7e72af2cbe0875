"""The applications model: form validation, filing against the records, the status flow with its
audit, and what the kiosk is given; on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sync_server.applications import (
    APPLICATION_PATH,
    KINDS,
    ApplicationInputError,
    ApplicationStateError,
    IdentityMismatchError,
    check_access,
    file_application,
    get_application,
    kiosk_item,
    list_for_resident,
    new_application_id,
    transition,
    validate_submission,
)
from sync_server.cases import hash_token
from sync_server.domain_models import Application, AuditEntry
from tests.cases.conftest import NOW

from .conftest import LI, PHONE, UNKNOWN, WANG

DIFFICULTY = {"monthly_income": "1500", "reason": "家庭成员患重病，\n医疗支出大"}


def file(engine: Engine, kind: str = "difficulty", *, at: float = NOW, **fields: Any) -> Any:
    values = fields or (DIFFICULTY if kind == "difficulty" else {})
    submission = validate_submission(kind, "王伟", WANG, PHONE, values)
    with engine.begin() as conn:
        return file_application(conn, at, submission)


def test_a_valid_form_is_normalised() -> None:
    s = validate_submission("difficulty", " 王 伟 ", WANG.lower(), "+86 138-0013-8000", DIFFICULTY)
    assert (s.name, s.id_number, s.phone) == ("王伟", WANG, PHONE)
    assert s.fields == {"monthly_income": 1500, "reason": "家庭成员患重病， 医疗支出大"}
    assert WANG not in repr(s) and PHONE not in repr(s)
    note = validate_submission("residence_permit", "王伟", WANG, PHONE, {"note": ""})
    assert note.fields == {"note": ""}


@pytest.mark.parametrize(
    ("name", "id_number", "phone", "fields", "problems"),
    [
        ("", WANG, PHONE, DIFFICULTY, {"name"}),
        ("王伟", WANG[:-1] + ("0" if WANG[-1] != "0" else "1"), PHONE, DIFFICULTY, {"id_number"}),
        ("王伟", WANG, "12345", DIFFICULTY, {"phone"}),
        ("王伟", WANG, PHONE, {"monthly_income": "-1", "reason": "有病"}, {"monthly_income"}),
        ("王伟", WANG, PHONE, {"monthly_income": "100001", "reason": "有病"}, {"monthly_income"}),
        ("王伟", WANG, PHONE, {"monthly_income": "nan", "reason": "有病"}, {"monthly_income"}),
        ("王伟", WANG, PHONE, {"monthly_income": "很少", "reason": "有病"}, {"monthly_income"}),
        ("王伟", WANG, PHONE, {"monthly_income": "10", "reason": "病"}, {"reason"}),
        ("王伟", WANG, PHONE, {"monthly_income": "10", "reason": "病" * 201}, {"reason"}),
        ("王伟", WANG, PHONE, {"monthly_income": "10"}, {"reason"}),
        ("<b>", "x" * 5000, "", {}, {"name", "id_number", "phone", "monthly_income", "reason"}),
    ],
)
def test_bad_forms_name_every_problem_in_chinese(
    name: str, id_number: str, phone: str, fields: dict[str, str], problems: set[str]
) -> None:
    with pytest.raises(ApplicationInputError) as err:
        validate_submission("difficulty", name, id_number, phone, fields)
    assert set(err.value.problems) == problems
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in err.value.problems.values())


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ApplicationInputError) as err:
        validate_submission("passport", "王伟", WANG, PHONE, {})
    assert set(err.value.problems) == {"kind"}


def test_numbers_are_a_and_nine_characters_of_the_case_alphabet() -> None:
    numbers = {new_application_id() for _ in range(200)}
    assert len(numbers) == 200
    assert all(re.fullmatch(APPLICATION_PATH, n) for n in numbers)


def test_filing_stores_the_resident_and_only_the_tokens_hash(town: Engine) -> None:
    application, token = file(town)
    assert re.fullmatch(APPLICATION_PATH, application.id)
    assert (application.status, application.community_id, application.kind) == (
        "submitted",
        "c1",
        "difficulty",
    )
    with town.connect() as conn:
        row = conn.execute(select(Application).where(Application.id == application.id)).one()
        assert row.id_number == WANG and row.phone == PHONE
        assert row.access_hash == hash_token(token) and token not in str(row)
        assert check_access(conn, application.id, token).id == application.id
        audit = conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "application.submitted")
        ).scalar_one()
    assert audit == {"kind": "difficulty", "application": application.id, "community": "c1"}
    assert WANG not in repr(application) and "王伟" not in repr(application)


@pytest.mark.parametrize(("name", "id_number"), [("王五", WANG), ("王伟", LI), ("王伟", UNKNOWN)])
def test_name_and_id_number_must_be_one_resident(town: Engine, name: str, id_number: str) -> None:
    submission = validate_submission("elderly_subsidy", name, id_number, PHONE, {})
    with pytest.raises(IdentityMismatchError) as err, town.begin() as conn:
        file_application(conn, NOW, submission)
    assert id_number not in str(err.value) and name not in str(err.value)


def test_the_status_flow_is_audited_without_the_reason(town: Engine) -> None:
    application, _ = file(town)
    with town.begin() as conn:
        accepted = transition(conn, application, "accepted", NOW + 10, actor="worker:3")
        with pytest.raises(ApplicationStateError):
            transition(conn, application, "done", NOW + 20, actor="worker:3")  # stale version
        with pytest.raises(ApplicationInputError):
            transition(conn, accepted, "rejected", NOW + 20, actor="worker:3", reason=" ")
        rejected = transition(
            conn, accepted, "rejected", NOW + 30, actor="worker:3", reason="收入超过标准"
        )
        with pytest.raises(ApplicationStateError):
            transition(conn, rejected, "done", NOW + 40, actor="worker:3")
        trail = conn.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.detail)
            .where(AuditEntry.action.like("application.%"))
            .order_by(AuditEntry.id)
        ).all()
    assert (rejected.status, rejected.reason, rejected.updated_at) == ("rejected", "收入超过标准",
                                                                       NOW + 30)  # fmt: skip
    assert [t.action for t in trail] == [
        "application.submitted",
        "application.accepted",
        "application.rejected",
    ]
    assert trail[2].detail == {"application": application.id, "kind": "difficulty",
                               "from": "accepted"}  # fmt: skip
    assert "收入" not in str([t.detail for t in trail])


def test_done_cannot_be_skipped(town: Engine) -> None:
    application, _ = file(town)
    with pytest.raises(ApplicationStateError), town.begin() as conn:
        transition(conn, application, "done", NOW, actor="worker:3")


def test_the_kiosk_gets_a_template_and_data_only_once_done(town: Engine) -> None:
    application, _ = file(town)
    item = kiosk_item(application)
    assert set(item) == {"id", "title", "status", "submitted_at", "template", "data"}
    assert (item["template"], item["data"], item["status"]) == (None, {}, "已提交，等待社区受理")
    with town.begin() as conn:
        accepted = transition(conn, application, "accepted", NOW, actor="worker:3")
        done = transition(conn, accepted, "done", NOW, actor="worker:3")
    item = kiosk_item(done)
    assert item["template"] == "difficulty" and item["title"] == "生活困难证明申请"
    assert item["data"] == {
        "difficulty": {"monthly_income": 1500, "reason": "家庭成员患重病， 医疗支出大"}
    }
    assert "打印" in item["status"]


def test_each_kind_gives_its_templates_household_data(town: Engine) -> None:
    elderly, _ = file(town, "elderly_subsidy")
    permit, _ = file(town, "residence_permit", note="周六上午")
    for application in (elderly, permit):
        with town.begin() as conn:
            accepted = transition(conn, application, "accepted", NOW, actor="worker:3")
            transition(conn, accepted, "done", NOW, actor="worker:3")
    with town.connect() as conn:
        items = {a.kind: kiosk_item(a) for a in list_for_resident(conn, WANG)}
    assert items["elderly_subsidy"]["template"] == "elderly_subsidy"
    assert items["elderly_subsidy"]["data"] == {"phone": PHONE}
    assert items["residence_permit"]["template"] is None and items["residence_permit"]["data"] == {}
    assert KINDS["residence_permit"].template is None


def test_a_resident_sees_their_own_newest_twenty(town: Engine) -> None:
    for i in range(22):
        file(town, "elderly_subsidy", at=NOW + i)
    submission = validate_submission("elderly_subsidy", "李芳", LI, PHONE, {})
    with town.begin() as conn:
        other, _ = file_application(conn, NOW + 100, submission)
    with town.connect() as conn:
        mine = list_for_resident(conn, WANG)
        assert [a.id for a in list_for_resident(conn, LI)] == [other.id]
        assert get_application(conn, other.id).id_number == LI
    assert len(mine) == 20
    assert [a.submitted_at for a in mine] == [NOW + i for i in range(21, 1, -1)]
