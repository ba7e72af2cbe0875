"""Batches on the database: assignment, offers that lapse, escalation, the SLA."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from sync_server.cases import get_case, open_case
from sync_server.dispatcher import Dispatcher, DispatchSettings
from sync_server.domain_models import Assignment, Case, Shift, Worker
from tests.cases.conftest import NOW
from tests.cases.test_cases import send


def deposited(engine: Engine, device: str = "locker-1") -> str:
    with engine.begin() as conn:
        case, _ = open_case(conn, NOW, service_id="residence", device_id=device)
    send(
        engine,
        device,
        ("compartment.deposited", {"compartment": 1, "case": case.id, "content": "documents"}),
    )
    return case.id


def offers(engine: Engine, case_id: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [
            (r.worker_id, r.status)
            for r in conn.execute(
                select(Assignment).where(Assignment.case_id == case_id).order_by(Assignment.id)
            )
        ]


def worker(engine: Engine, username: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Worker.id).where(Worker.username == username)).scalar_one())


def test_a_deposit_is_offered_to_a_worker_of_its_grid(site: Engine) -> None:
    case_id = deposited(site, "locker-2")  # grid g2: only li covers it
    report = Dispatcher(site).run_once(NOW)
    assert (report.pickups, report.assigned) == (1, 1)
    assert offers(site, case_id) == [(worker(site, "li"), "offered")]
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.worker_id) == ("assigned", worker(site, "li"))
    assert [n.template for n in report.notices] == ["case.assigned"]


def test_an_unacknowledged_offer_goes_to_someone_else(site: Engine) -> None:
    case_id = deposited(site)
    dispatcher = Dispatcher(site, DispatchSettings(ack_timeout_s=60))
    dispatcher.run_once(NOW)
    first = offers(site, case_id)[0][0]
    report = dispatcher.run_once(NOW + 61)
    assert report.timed_out == 1
    assert offers(site, case_id)[0] == (first, "timed_out")
    second = offers(site, case_id)[1]
    assert second[1] == "offered" and second[0] != first


def test_an_acknowledged_offer_stays(site: Engine) -> None:
    case_id = deposited(site)
    dispatcher = Dispatcher(site, DispatchSettings(ack_timeout_s=60))
    dispatcher.run_once(NOW)
    with site.begin() as conn:
        conn.execute(update(Assignment).values(status="acknowledged"))
    assert dispatcher.run_once(NOW + 600).timed_out == 0
    assert [s for _, s in offers(site, case_id)] == ["acknowledged"]


def test_with_nobody_on_shift_a_case_waits_then_escalates_near_its_deadline(site: Engine) -> None:
    with site.begin() as conn:
        conn.execute(update(Shift).values(start_at=NOW + 10 * 3600, end_at=NOW + 12 * 3600))
    case_id = deposited(site)  # pickup due in 4 h
    dispatcher = Dispatcher(site, DispatchSettings(escalate_margin_s=1800))
    assert dispatcher.run_once(NOW).escalated == 0
    with site.connect() as conn:
        assert get_case(conn, case_id).state == "deposited"
    report = dispatcher.run_once(NOW + 4 * 3600 - 600)
    assert report.escalated == 1
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.level, case.resumes) == ("escalated", "community", "deposited")
    assert [(n.template, n.area_id) for n in report.notices] == [("case.escalated", "c1")]


def test_a_full_worker_gets_nothing_more(site: Engine) -> None:
    with site.begin() as conn:
        conn.execute(update(Worker).where(Worker.username == "li").values(capacity=0))
    case_id = deposited(site, "locker-2")
    assert Dispatcher(site).run_once(NOW).assigned == 0
    assert offers(site, case_id) == []


def test_late_cases_become_overdue_then_escalate_level_by_level(site: Engine) -> None:
    case_id = deposited(site)
    with site.begin() as conn:
        conn.execute(update(Shift).values(start_at=NOW + 10 * 3600, end_at=NOW + 12 * 3600))
    dispatcher = Dispatcher(site, DispatchSettings(escalate_margin_s=0, escalate_after_s=3600))
    report = dispatcher.run_once(NOW + 4 * 3600 + 1)
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert case.state in ("overdue", "escalated")
    dispatcher.run_once(NOW + 6 * 3600)
    dispatcher.run_once(NOW + 8 * 3600)
    with site.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.level) == ("escalated", "street")
    assert report.overdue + report.escalated >= 1


def test_many_cases_are_spread_and_never_doubly_assigned(site: Engine) -> None:
    cases = [deposited(site) for _ in range(6)]
    Dispatcher(site).run_once(NOW)
    Dispatcher(site).run_once(NOW + 1)
    per_case = {c: offers(site, c) for c in cases}
    assert all(len(o) == 1 for o in per_case.values())
    workers = {o[0][0] for o in per_case.values()}
    assert workers == {worker(site, "wang"), worker(site, "li")}


def test_a_ready_result_is_assigned_as_a_return_and_the_case_stays_processing(
    site: Engine,
) -> None:
    from sync_server.cases import move

    case_id = deposited(site, "locker-2")  # g2: only li
    dispatcher = Dispatcher(site, DispatchSettings(ack_timeout_s=60))
    dispatcher.run_once(NOW)
    send(
        site,
        "locker-2",
        ("compartment.emptied", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    with site.begin() as conn:
        case = move(
            conn, get_case(conn, case_id), "processing", NOW, actor="worker:1", reason="test"
        )
        conn.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(result_ready_at=NOW + 10, version=case.version + 1)
        )
    assert dispatcher.run_once(NOW + 20).assigned == 1
    with site.connect() as conn:
        kinds = conn.execute(
            select(Assignment.kind, Assignment.status)
            .where(Assignment.case_id == case_id)
            .order_by(Assignment.id)
        ).all()
        case = get_case(conn, case_id)
    assert [tuple(k) for k in kinds] == [("pickup", "done"), ("return", "offered")]
    assert (case.state, case.worker_id) == ("processing", worker(site, "li"))
    # The return done (result in a compartment) closes the return assignment.
    send(
        site,
        "locker-2",
        ("compartment.deposited", {"compartment": 2, "case": case_id, "content": "result"}),
    )
    with site.connect() as conn:
        statuses = (
            conn.execute(
                select(Assignment.status)
                .where(Assignment.case_id == case_id)
                .order_by(Assignment.id)
            )
            .scalars()
            .all()
        )
    assert statuses == ["done", "done"]
    # A lapsed return offer does not move the case back.
    assert dispatcher.run_once(NOW + 200).timed_out == 0


def test_reminders_go_once_before_the_deadline_and_after_days_in_the_locker(site: Engine) -> None:
    case_id = deposited(site)  # pickup due NOW + 4 h
    dispatcher = Dispatcher(site, DispatchSettings(remind_before_s=3600,
                                                   collect_remind_after_s=86400))  # fmt: skip
    dispatcher.run_once(NOW)
    with site.begin() as conn:
        conn.execute(update(Assignment).values(status="acknowledged"))
    assert not [n for n in dispatcher.run_once(NOW + 3600).notices if n.template == "case.reminder"]
    soon = dispatcher.run_once(NOW + 3 * 3600 + 60).notices
    assert [(n.template, n.case_id) for n in soon] == [("case.reminder", case_id)]
    assert dispatcher.run_once(NOW + 3 * 3600 + 120).notices == []  # once
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 1, "case": case_id, "content": "documents"}),
    )
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 2, "case": case_id, "content": "result"}),
    )
    with site.connect() as conn:
        stored_at = get_case(conn, case_id).result_at
    assert stored_at is not None
    assert dispatcher.run_once(stored_at + 3600).notices == []
    later = dispatcher.run_once(stored_at + 86400 + 1).notices
    assert [(n.template, n.to_resident) for n in later] == [("case.collect_reminder", True)]
    assert dispatcher.run_once(stored_at + 2 * 86400).notices == []
