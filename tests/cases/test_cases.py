"""The case state machine and the projection of locker events, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from device.protocol import EventBatch, EventMessage
from sync_server.cases import (
    CaseError,
    CaseNotFoundError,
    CaseStateError,
    check_access,
    get_case,
    move,
    open_case,
    set_overlay,
)
from sync_server.domain_models import Assignment, AuditEntry, Compartment
from sync_server.ingest import ingest_batch
from sync_server.projection import DomainProjector
from tests.cases.conftest import NOW

_seq = iter(range(1, 10_000))


def send(engine: Engine, device: str, *events: tuple[str, dict[str, Any]], seq: int | None = None):
    """Store events of ``device`` through ingest with the domain projector, like the consumer."""
    first = seq if seq is not None else next(_seq)
    batch = EventBatch(
        device=device,
        boot=1,
        events=[
            EventMessage(seq=first + i, id=f"{first + i:032x}", type=t, at=NOW, data=d)
            for i, (t, d) in enumerate(events)
        ],
    )
    return ingest_batch(engine, batch, clock=lambda: NOW, projector=DomainProjector())


def new_case(engine: Engine, device: str = "locker-1") -> tuple[str, str]:
    with engine.begin() as conn:
        case, token = open_case(
            conn, NOW, service_id="residence", device_id=device, phone="13800138000"
        )
    return case.id, token


def state(engine: Engine, case_id: str) -> str:
    with engine.connect() as conn:
        return get_case(conn, case_id).state


def test_a_case_follows_the_lockers_reports_to_completion(site: Engine) -> None:
    case_id, _ = new_case(site)
    assert state(site, case_id) == "draft"
    result = send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 3, "case": case_id, "content": "documents"}),
    )
    assert [e.kind for e in result.effects] == ["case.deposited"]
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.compartment) == ("deposited", 3)
    assert case.due_at == pytest.approx(NOW + 4 * 3600)  # the service's pickup_hours
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 3, "case": case_id, "content": "documents"}),
    )
    assert state(site, case_id) == "collected"
    with site.begin() as conn:
        move(conn, get_case(conn, case_id), "processing", NOW, actor="worker:1", reason="test")
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 5, "case": case_id, "content": "result"}),
    )
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.result_compartment) == ("result_stored", 5)
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 5, "case": case_id, "content": "result"}),
    )
    assert state(site, case_id) == "completed"
    with site.connect() as conn:
        actions = (
            conn.execute(
                select(AuditEntry.action)
                .where(AuditEntry.case_id == case_id)
                .order_by(AuditEntry.id)
            )
            .scalars()
            .all()
        )
    assert actions == [
        "case.opened",
        "case.deposited",
        "case.collected",
        "case.processing",
        "case.result_stored",
        "case.completed",
    ]


def test_a_redelivered_report_changes_nothing(site: Engine) -> None:
    case_id, _ = new_case(site)
    event = ("compartment.deposited", {"compartment": 2, "case": case_id, "content": "documents"})
    send(site, "locker-1", event, seq=5000)
    again = send(site, "locker-1", event, seq=5000)
    assert (again.stored, again.duplicates, again.effects) == (0, 1, ())
    with site.connect() as conn:
        n = conn.execute(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.case_id == case_id, AuditEntry.action == "case.deposited")
        ).scalar_one()
    assert n == 1


def test_reports_out_of_order_move_forward_only(site: Engine) -> None:
    case_id, _ = new_case(site)
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 4, "case": case_id, "content": "documents"}),
    )
    assert state(site, case_id) == "collected"
    # The deposit report arrives after the pickup report: the case does not go back.
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 4, "case": case_id, "content": "documents"}),
    )
    assert state(site, case_id) == "collected"


def test_a_pickup_report_finishes_the_open_assignment(site: Engine) -> None:
    case_id, _ = new_case(site)
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    with site.begin() as conn:
        conn.execute(
            insert(Assignment).values(
                case_id=case_id,
                worker_id=1,
                kind="pickup",
                status="acknowledged",
                created=NOW,
                ack_due=NOW + 60,
            )
        )
        move(
            conn,
            get_case(conn, case_id),
            "assigned",
            NOW,
            actor="system",
            reason="dispatch",
            worker_id=1,
        )
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    with site.connect() as conn:
        status = conn.execute(
            select(Assignment.status).where(Assignment.case_id == case_id)
        ).scalar_one()
    assert status == "done"


def test_reports_from_another_locker_or_unknown_cases_are_audited_not_applied(site: Engine) -> None:
    case_id, _ = new_case(site, "locker-1")
    send(
        site,
        "locker-2",
        ("compartment.deposited", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    send(
        site,
        "locker-2",
        (
            "compartment.deposited",
            {"compartment": 1, "case": "CNOSUCHCASE", "content": "documents"},
        ),
    )
    assert state(site, case_id) == "draft"
    with site.connect() as conn:
        n = conn.execute(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "locker.unknown_case")
        ).scalar_one()
    assert n == 2


def test_compartments_keep_the_newest_report(site: Engine) -> None:
    send(
        site,
        "locker-1",
        ("compartment.state", {"compartment": 7, "from": "free", "to": "reserved", "case": "C1"}),
        seq=9000,
    )
    send(
        site,
        "locker-1",
        (
            "compartment.state",
            {"compartment": 7, "from": "reserved", "to": "open_for_deposit", "case": "C1"},
        ),
        seq=9002,
    )
    send(
        site,
        "locker-1",
        ("compartment.state", {"compartment": 7, "from": "free", "to": "reserved", "case": "C1"}),
        seq=9001,
    )
    with site.connect() as conn:
        row = conn.execute(
            select(Compartment.state, Compartment.seq).where(
                Compartment.device_id == "locker-1", Compartment.number == 7
            )
        ).one()
    assert tuple(row) == ("open_for_deposit", 9002)


def test_alarms_are_audited_and_returned_as_effects(site: Engine) -> None:
    result = send(
        site,
        "locker-1",
        ("compartment.alarm", {"compartment": 2, "alarm": "door-open", "open_s": 121.0}),
    )
    assert [(e.kind, e.compartment) for e in result.effects] == [("compartment.alarm", 2)]


def test_only_the_token_opens_a_case_to_its_resident(site: Engine) -> None:
    case_id, token = new_case(site)
    with site.connect() as conn:
        assert check_access(conn, case_id, token).id == case_id
        with pytest.raises(CaseNotFoundError) as wrong:
            check_access(conn, case_id, token[:-1] + ("A" if token[-1] != "A" else "B"))
        with pytest.raises(CaseNotFoundError) as missing:
            check_access(conn, "CXXXXXXXXX", token)
    assert type(wrong.value) is type(missing.value)
    assert token not in repr(get_case(site.connect(), case_id))


def test_phone_is_not_in_the_repr(site: Engine) -> None:
    case_id, _ = new_case(site)
    with site.connect() as conn:
        assert "13800138000" not in repr(get_case(conn, case_id))


def test_illegal_moves_are_refused(site: Engine) -> None:
    case_id, _ = new_case(site)
    with (
        site.begin() as conn,
        pytest.raises(CaseStateError, match="cannot go from draft to collected"),
    ):
        move(conn, get_case(conn, case_id), "collected", NOW, actor="worker:1", reason="test")


def test_a_stale_version_is_refused(site: Engine) -> None:
    case_id, _ = new_case(site)
    with site.connect() as conn:
        stale = get_case(conn, case_id)
    with site.begin() as conn:
        move(conn, stale, "deposited", NOW, actor="device:locker-1", reason="test")
    with site.begin() as conn, pytest.raises(CaseStateError, match="changed meanwhile"):
        move(conn, stale, "cancelled", NOW, actor="resident", reason="test")


def test_overlays_keep_the_flow_state(site: Engine) -> None:
    case_id, _ = new_case(site)
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    with site.begin() as conn:
        case = set_overlay(
            conn, get_case(conn, case_id), "escalated", NOW, actor="system", level="community"
        )
    assert (case.state, case.effective, case.level) == ("escalated", "deposited", "community")
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.resumes, case.level) == ("collected", None, "grid")


@pytest.mark.parametrize(
    ("service", "device"),
    [
        ("retired", "locker-1"),
        ("nope", "locker-1"),
        ("residence", "kiosk-1"),
        ("residence", "nope"),
    ],
)
def test_cases_open_only_for_active_services_at_lockers(
    site: Engine, service: str, device: str
) -> None:
    with site.begin() as conn, pytest.raises(CaseError):
        open_case(conn, NOW, service_id=service, device_id=device)
