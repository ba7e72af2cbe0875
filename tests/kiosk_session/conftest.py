"""A kiosk session on simulated hardware: the real SAM driver over a pty, the real device store
(resident cache, catalogue, notices, outbox), the real CertificateDesk handing PDFs to a private
real cupsd and receipts to the ESC/POS emulator over TCP. Time is a FakeClock the tests move.

Jobs (lookups, previews, prints) run in real worker threads (``ThreadRunner``) unless a test holds
them back with :class:`HeldJobs` to look at the state in between.
"""

from __future__ import annotations

import datetime as dt
import gc
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.clock import FakeClock
from device.config import A4PrinterSection, CertificateSection, ReceiptPrinterSection
from device.credential import SigningKey, generate_signing_key
from device.escpos.printer import ReceiptPrinter
from device.idcard.identity import Identity, id_check_digit
from device.idcard.reader import SamReader
from device.store import Event, ResidentCache, Store, open_store
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from kiosk_ui.certificates import RenderedCertificate, load_templates
from kiosk_ui.certificates.render import CHINA_TZ
from kiosk_ui.issuing import CertificateDesk
from kiosk_ui.online import Application, OnlineApplications, OnlineResidents, RpcCaller
from kiosk_ui.printing import CertificateService, Prepared
from kiosk_ui.screens import Screen, State
from kiosk_ui.services import (
    CertificateChecker,
    KioskServices,
    NoticeBoard,
    ServiceGuide,
    SubsidyStatus,
)
from kiosk_ui.session import KioskSession, Runner, SessionSettings, ThreadRunner
from tests.certificates.conftest import COMMUNITY, household_record
from tests.mqtt_helpers import wait_for

NOW = dt.datetime(2026, 3, 16, 10, 0, tzinfo=CHINA_TZ).timestamp()
"""The kiosk's wall time in every test: 16 March 2026, 10:00 in China."""
IDLE_S = 60.0
RESULT_S = 20.0

RESIDENT = sample_card(5)  # 20, valid to 2032, complete household record
STRANGER = sample_card(6)  # not in this kiosk's cache
EXPIRED = sample_card(7)  # valid to 2018
CERTIFIED = sample_card(3)  # born 1942: certified for 2026
DUE = sample_card(9)  # born 1943: last certified 2025
UNKNOWN_SUBSIDY = sample_card(2)  # born 1940: record without subsidy_year
INCOMPLETE = sample_card(4)  # household without an address
_bad = sample_card(8)
_wrong = "0" if id_check_digit(_bad.id_number[:17]) != "0" else "1"
BAD_ID = replace(_bad, id_number=_bad.id_number[:17] + _wrong)

CATALOGUE = {
    "svc-residence": {
        "name": "居住证明开具",
        "description": "为本社区居民开具居住证明。",
        "documents": ["居民身份证", "户口簿或租房合同"],
        "pickup_hours": 24.0,
        "process_hours": 48.0,
    },
    "svc-elderly": {
        "name": "高龄津贴申领",
        "description": "年满80周岁的老人申领高龄津贴。",
        "documents": ["居民身份证", "银行卡"],
        "pickup_hours": 24.0,
        "process_hours": 72.0,
    },
}
NOTICES = {
    "n-local": {"title": "幸福社区停水通知", "body": "3月18日9时至12时停水。", "community": "C01",
                "community_name": "幸福社区", "valid_until": NOW + 86400 * 3,
                "published_at": NOW - 3600},
    "n-all": {"title": "全区疫苗接种安排", "body": "请携带身份证前往社区卫生服务中心。",
              "community": None, "community_name": None, "valid_until": NOW + 86400 * 30,
              "published_at": NOW - 86400},
    "n-other": {"title": "和平社区活动", "body": "仅和平社区。", "community": "C02",
                "community_name": "和平社区", "valid_until": NOW + 86400, "published_at": NOW},
    "n-old": {"title": "已过期的通知", "body": "过期。", "community": None,
              "community_name": None, "valid_until": NOW - 60, "published_at": NOW - 86400 * 9},
}  # fmt: skip


def households() -> dict[str, dict[str, Any]]:
    """The cached ``residents`` items, as the server publishes them (ID number -> item)."""
    full = household_record()
    certified = {**household_record(), "subsidy_year": 2026}
    due = {**household_record(), "subsidy_year": 2025}
    no_address = household_record()
    del no_address["address"]
    records = {
        RESIDENT: full,
        CERTIFIED: certified,
        DUE: due,
        UNKNOWN_SUBSIDY: household_record(),
        INCOMPLETE: no_address,
    }
    return {c.id_number: {"id_number": c.id_number, "household": h} for c, h in records.items()}


class HeldJobs:
    """A runner that keeps jobs until the test runs them (to look at the states in between)."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run_all(self) -> int:
        done = 0
        while self.jobs:
            self.jobs.pop(0)()
            done += 1
        return done


@dataclass
class Kiosk:
    session: KioskSession
    services: KioskServices
    clock: FakeClock
    store: Store
    reader: SamReader
    card_slot: SamEmulator
    queue: SimQueue
    cupsd: CupsTestServer
    receipt_model: EscposTcpPrinter
    desk: CertificateDesk
    signing_key: SigningKey
    runner: Runner
    online: list[bool] = field(default_factory=lambda: [False])

    def place(self, card: Identity) -> None:
        """Put ``card`` on the reader, read it with the real driver, tell the session."""
        self.card_slot.insert(card)
        try:
            read: Identity | BaseException | None = self.reader.read_card()
        except Exception as err:  # the reader's typed error goes to the session as is
            read = err
        assert read is not None, "the reader found no card"
        self.session.card_placed(read)

    def lift(self) -> None:
        self.card_slot.lift()
        self.session.card_lifted()

    def wait(self, screen_id: str, timeout_s: float = 20.0) -> Screen:
        wait_for(lambda: self.session.screen.id == screen_id, timeout_s,
                 f"screen {screen_id} (now {self.session.screen.id})")  # fmt: skip
        return self.session.screen

    def events(self, type_: str) -> list[Event]:
        return [e for e in self.store.outbox.pending(1000) if e.type == type_]

    def nothing_printed(self) -> bool:
        return (
            self.queue.outputs() == []
            and self.receipt_model.received == bytearray()
            and self.desk.a4.pending() == []
            and self.events("certificate.issued") == []
        )

    def join(self) -> None:
        if isinstance(self.runner, ThreadRunner):
            assert self.runner.join(30)
        elif isinstance(self.runner, HeldJobs):
            self.runner.run_all()


MakeKiosk = Callable[..., Kiosk]


def seed(store: Store) -> None:
    store.documents.apply_snapshot("residents", 1, households())
    store.documents.apply_snapshot("catalogue", 1, CATALOGUE)
    store.documents.apply_snapshot("notices", 1, NOTICES)


@pytest.fixture
def make_kiosk(
    cupsd: CupsTestServer, queue: SimQueue, device_key: DeviceKey, tmp_path: Path
) -> Iterator[MakeKiosk]:
    """``make_kiosk(runner=, store=, rpc=, online=False, on_change=, rpc_timeout_s=3)``: one
    kiosk per test; ``online`` is a flag the test flips (``kiosk.online[0]``) or a callable."""
    stack: list[Any] = []
    sessions: list[Kiosk] = []

    def make(
        *,
        runner: Runner | None = None,
        store: Store | None = None,
        rpc: RpcCaller | None = None,
        online: bool | Callable[[], bool] = False,
        on_change: Callable[[Screen], None] | None = None,
        rpc_timeout_s: float = 3.0,
    ) -> Kiosk:
        if store is None:
            store = open_store(tmp_path / "store.db", key=device_key)
            stack.append(store)
        seed(store)
        receipt_model = EscposTcpPrinter(port=0).__enter__()
        card_slot = SamEmulator(pace=False).__enter__()
        reader = SamReader(port=card_slot.path, timeout_s=0.5, retries=2)
        stack.extend([reader, card_slot, receipt_model])
        clock = FakeClock(start=1_000.0, wall=NOW)
        signing_key = generate_signing_key("kiosk-0001")
        a4 = A4Printer(
            A4PrinterSection(queue=queue.name, job_timeout_s=20, poll_interval_s=0.05),
            tmp_path / "spool" / "a4",
            server=cupsd.socket,
            key=device_key,
        )
        receipts = ReceiptPrinter(
            ReceiptPrinterSection(backend="network", tcp_port=receipt_model.port, timeout_s=2),
            tmp_path / "spool" / "receipt",
            key=device_key,
        )
        desk = CertificateDesk(
            templates=load_templates(),
            households=ResidentCache(store),
            config=CertificateSection(community=COMMUNITY),
            signing_key=signing_key,
            a4=a4,
            receipts=receipts,
            clock=clock,
        )
        state = [bool(online)]
        is_online: Callable[[], bool] = online if callable(online) else (lambda: state[0])
        services = KioskServices(
            households=ResidentCache(store),
            certificates=CertificateService(desk, store, preview_width_px=400),
            guide=ServiceGuide(store),
            notices=NoticeBoard(store, community_id="C01"),
            online=is_online,
            online_residents=OnlineResidents(rpc, is_online, timeout_s=rpc_timeout_s),
            applications=OnlineApplications(rpc, is_online, timeout_s=rpc_timeout_s),
            subsidy=SubsidyStatus(deadline=dt.date(2026, 6, 30)),
            checker=CertificateChecker(
                {signing_key.kid: signing_key.verify_key},
                {t.name: t.title for t in desk.templates.values()},
            ),
        )
        run = runner if runner is not None else ThreadRunner()
        session = KioskSession(
            services,
            clock=clock,
            settings=SessionSettings(idle_timeout_s=IDLE_S, result_timeout_s=RESULT_S),
            runner=run,
            on_change=on_change,
        )
        kiosk = Kiosk(session, services, clock, store, reader, card_slot, queue, cupsd,
                      receipt_model, desk, signing_key, run, state)  # fmt: skip
        sessions.append(kiosk)
        return kiosk

    yield make
    for kiosk in sessions:
        kiosk.session.end()
        kiosk.join()
    for thing in reversed(stack):
        if isinstance(thing, EscposTcpPrinter | SamEmulator):
            thing.__exit__(None, None, None)
        else:
            thing.close()


# -- privacy checks -----------------------------------------
PERSONAL_TYPES = (Identity, Prepared, RenderedCertificate, Application)


def personal_reachable(
    root: object,
    card: Identity,
    stop: tuple[object, ...],
    *,
    objects: bool = True,
    household: bool = True,
) -> list[str]:
    """Everything personal reachable from ``root`` (its attributes, containers, closures of the
    jobs it keeps), not walking into ``stop`` (the services: the cache legitimately holds
    records) nor into modules, classes and function globals. ``objects``: also report any
    identity, preview or application object (of anyone), not only ``card``'s texts;
    ``household``: also look for the (shared) test household's address."""
    needles: tuple[str, ...] = (card.name, card.id_number, card.address)
    if household:
        needles += (household_record()["address"],)
    stop_ids = {id(s) for s in stop}
    seen: set[int] = set()
    todo: list[object] = [root]
    found: list[str] = []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in stop_ids:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found += [f"text containing personal data: {obj[:8]}..." for n in needles if n in obj]
            continue
        if objects and isinstance(obj, PERSONAL_TYPES):
            found.append(f"a {type(obj).__name__}")
            continue
        if isinstance(obj, bytes | bytearray | int | float | types.ModuleType | type):
            continue
        if isinstance(obj, types.FunctionType):
            todo += [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
            continue
        todo += gc.get_referents(obj)
    return found


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 -- an empty cell raises
    except ValueError:
        return False
    return True


def assert_wiped(kiosk: Kiosk, card: Identity) -> None:
    session = kiosk.session
    assert session.state is State.IDLE
    assert session.screen.id == "idle"
    assert session.seconds_left() is None
    leaks = personal_reachable(session, card, stop=(kiosk.services,))
    assert leaks == []
    assert card.name not in session.screen.text()
