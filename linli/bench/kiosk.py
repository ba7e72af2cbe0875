"""Benchmark: ID card placed -> certificate handed to the CUPS queue and receipt bytes sent.

Everything is the real driver stack on simulated hardware: the SAM reader emulator behind a pty
(replies paced at the line rate) read by :class:`~device.idcard.reader.SamReader`; the certificate
rendered and signed by :class:`~kiosk_ui.issuing.CertificateDesk` (household from the encrypted
resident cache of :mod:`device.store`); the PDF sealed into the spool and
handed to a private real ``cupsd`` (``linli-sim`` queue) through pycups; the receipt status-checked
and sent to the ESC/POS emulator on TCP through python-escpos, acknowledged by its ``DLE EOT``
reply. Each sample runs from the moment the card is put on the reader to the moment the receipt is
acknowledged. One warm-up visit (font registration, first CUPS connection) is not counted, as the
kiosk does that once at start. The reader's wire time for the same exchange is the reference.

The same path is then timed through the session controller (:class:`~kiosk_ui.session.KioskSession`
wired as on a kiosk, offline, with its ``ThreadRunner``): the polling IdCardWatcher hands the card
to ``card_placed``, and a resident with **zero think time** touches 打印证明, the residence template
and 确认打印 from the ``on_change`` callback the instant each screen appears. That gives card ->
identity on screen (the ``menu`` greeting the resident by masked name), card -> ``printed`` screen
(which includes rendering the PNG preview, absent from the desk's ``issue()``), and the preview
and print stages. The certificate service does not follow the A4 job there (``follow=False``): the
printed screen comes once CUPS accepted the job and the receipt was acknowledged, the point
DESIGN.md's budget names; the controller's default also waits for CUPS to report the page out.

After the timed visits every A4 job is followed to completion and every receipt is checked on the
emulator (the session's receipts by the serial on the screen), so a benchmark that "finished fast"
by losing output fails instead of reporting.
"""

from __future__ import annotations

import queue
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.config import (
    A4PrinterSection,
    CertificateSection,
    IdCardSection,
    ReceiptPrinterSection,
)
from device.credential import generate_signing_key
from device.escpos.printer import ReceiptPrinter
from device.idcard.identity import Identity
from device.idcard.reader import SamReader
from device.idcard.watcher import IdCardWatcher
from device.privacy import mask_name
from device.store import ResidentCache, Store, open_store
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from hardware_sim.serial_pty import wire_time
from kiosk_ui.certificates import load_templates
from kiosk_ui.issuing import CertificateDesk, IssuedCertificate
from kiosk_ui.online import OnlineApplications, OnlineResidents
from kiosk_ui.printing import CertificateService
from kiosk_ui.screens import Screen, State
from kiosk_ui.services import (
    CertificateChecker,
    KioskServices,
    NoticeBoard,
    ServiceGuide,
    SubsidyStatus,
    china_date,
)
from kiosk_ui.session import KioskSession, ThreadRunner
from linli.bench import summarize, value
from linli.bench.idcard import exchange_bytes

BUDGET_P95_S = 0.5
"""DESIGN.md's budget for this path."""
CARDS = 8
PREVIEW_WIDTH_PX = 800
"""The kiosk screen's preview width (CertificateService's default, `linli bench print`'s)."""

T = TypeVar("T")


def household(i: int) -> dict[str, Any]:
    return {
        "address": f"上海市浦东新区幸福路{12 + i}号3栋2单元501室",
        "residence_since": "2015-06-01",
        "members": [{"name": "示例", "relation": "本人"}],
    }


def _desk(
    tmp: Path, cupsd: CupsTestServer, queue: SimQueue, receipt_port: int, store: Store
) -> CertificateDesk:
    """The kiosk's desk; households come from ``store``'s residents document (sealed with the
    device key, looked up by keyed hash), as on a real kiosk."""
    cards = [sample_card(i) for i in range(CARDS)]
    at_rest = store.key
    records = {
        c.id_number: {"id_number": c.id_number, "household": household(i)}
        for i, c in enumerate(cards)
    }
    store.documents.apply_snapshot("residents", 1, records)
    config = CertificateSection()
    return CertificateDesk(
        templates=load_templates(config.templates_dir),
        households=ResidentCache(store),
        config=config,
        signing_key=generate_signing_key("bench-kiosk"),
        a4=A4Printer(
            A4PrinterSection(queue=queue.name, job_timeout_s=30, poll_interval_s=0.05),
            tmp / "spool" / "a4",
            server=cupsd.socket,
            key=at_rest,
        ),
        receipts=ReceiptPrinter(
            ReceiptPrinterSection(backend="network", tcp_port=receipt_port, timeout_s=2),
            tmp / "spool" / "receipt",
            key=at_rest,
        ),
    )


def _direct_visits(
    desk: CertificateDesk, emulator: SamEmulator, baudrate: int, runs: int
) -> tuple[list[IssuedCertificate], dict[str, list[float]]]:
    """Read right after the card is placed (no polling wait); the first visit is a warm-up."""
    times: dict[str, list[float]] = {
        k: [] for k in ("visit", "read", "issue", "render", "hand_over", "receipt")
    }
    jobs = []
    with SamReader(port=emulator.path, baudrate=baudrate, timeout_s=2.0, retries=0) as reader:
        for i in range(runs + 1):
            card = sample_card(i % CARDS)
            emulator.insert(card)
            t0 = time.perf_counter()
            identity = reader.read_card()
            t1 = time.perf_counter()
            if identity is None or identity != card:
                raise RuntimeError(f"visit {i}: the simulated card was not read back intact")
            issued = desk.issue(identity, "residence")
            t2 = time.perf_counter()
            emulator.lift()
            if not issued.receipt_printed:
                raise RuntimeError(f"visit {i}: receipt not printed: {issued.receipt_problem}")
            jobs.append(issued)
            if i == 0:
                continue  # warm-up
            times["visit"].append(t2 - t0)
            times["read"].append(t1 - t0)
            times["issue"].append(t2 - t1)
            for stage, seconds in issued.stages_s.items():
                times[stage].append(seconds)
    return jobs, times


Done = queue.Queue[tuple[float, T | BaseException]]
"""Where a visit's outcome lands: (perf_counter stamp, result or the error that ended it)."""


def _polled_placements(
    emulator: SamEmulator,
    baudrate: int,
    cards: Sequence[Identity],
    *,
    runs: int,
    seed: int,
    on_card: Callable[[Identity], None],
    done: Done[T],
    warmup: int = 0,
    between: Callable[[], None] | None = None,
    what: str = "polled visit",
) -> list[tuple[Identity, float, float, T]]:
    """Place ``warmup + runs`` cards on the emulator while an IdCardWatcher polls it every
    poll_interval_ms, each at a seeded random moment of its cycle (so the wait for the next poll
    is in every sample), and wait for ``done`` to receive the visit's outcome.

    ``on_card`` is the watcher's callback; whatever it starts puts ``(stamp, result)`` on
    ``done``. After each visit the card is lifted and ``between()`` runs (ending the session).
    Returns ``(card, placed_at, stamp, result)`` per visit after the warm-up ones.
    """
    rng = random.Random(seed)  # noqa: S311  # placement times, not secrets
    interval = IdCardSection().poll_interval_ms / 1000
    visits: list[tuple[Identity, float, float, T]] = []
    watcher = IdCardWatcher(None, on_card, port=emulator.path, baudrate=baudrate, retries=0)
    with watcher.start():
        time.sleep(3 * interval)  # the reader is open and polling
        for i in range(warmup + runs):
            time.sleep(rng.uniform(0, interval))  # any phase of the polling cycle
            if not done.empty():
                raise RuntimeError(f"{what} {i}: the watcher reported a card nobody placed")
            card = cards[i % len(cards)]
            t0 = time.perf_counter()
            emulator.insert(card)
            try:
                t1, result = done.get(timeout=10)
            except queue.Empty:
                raise RuntimeError(f"{what} {i}: no outcome within 10 s of the card") from None
            if isinstance(result, BaseException):
                raise RuntimeError(f"{what} {i}: {result}") from result
            emulator.lift()
            if between is not None:
                between()
            if i >= warmup:
                visits.append((card, t0, t1, result))
            time.sleep(2.5 * interval)  # the watcher sees the card gone
    return visits


def _polled_visits(
    desk: CertificateDesk, emulator: SamEmulator, baudrate: int, runs: int, seed: int
) -> tuple[list[IssuedCertificate], list[float]]:
    """The kiosk as it runs: IdCardWatcher polling every poll_interval_ms, cards placed at random
    moments of its cycle, so the wait for the next poll is part of each sample."""
    done: Done[IssuedCertificate] = queue.Queue()

    def on_card(identity: Identity) -> None:
        try:
            issued = desk.issue(identity, "residence")
            done.put((time.perf_counter(), issued))  # stamped after the receipt was acknowledged
        except Exception as err:  # noqa: BLE001  # handed to the timing loop, which raises it
            done.put((time.perf_counter(), err))

    cards = [sample_card(i) for i in range(CARDS)]
    visits = _polled_placements(
        emulator, baudrate, cards, runs=runs, seed=seed, on_card=on_card, done=done
    )
    for i, (card, _, _, issued) in enumerate(visits):
        if issued.certificate.fields.get("id_number") != card.id_number:
            raise RuntimeError(f"polled visit {i}: certificate issued for another card")
    return [v[3] for v in visits], [t1 - t0 for _, t0, t1, _ in visits]


@dataclass
class _SessionVisit:
    """One resident's trip through the controller: perf_counter stamps and what was shown."""

    card: Identity
    placed_at: float = 0.0
    menu_at: float = 0.0
    template_at: float = 0.0
    preview_at: float = 0.0
    confirm_at: float = 0.0
    printed_at: float = 0.0
    serial: str = ""


class _Resident:
    """Touches the next step the instant its screen appears (``on_change``): zero think time.

    The resident's path is menu -> 打印证明 -> residence template -> preview -> 确认打印 ->
    printed; any other screen (a refusal, an unknown resident, a printer problem) ends the visit
    with an error, so a wrong path fails the benchmark instead of being timed.
    """

    IGNORED = frozenset({"idle", "working", "printing"})  # busy screens, and the end

    def __init__(self, done: Done[_SessionVisit]) -> None:
        self.done = done
        self.session: KioskSession | None = None
        self.visit: _SessionVisit | None = None
        self.printed: list[str] = []
        """Serials of every certificate printed, warm-up included."""

    def on_card(self, identity: Identity) -> None:
        """The watcher's callback: a new visit starts, then the controller gets the card."""
        assert self.session is not None
        self.visit = _SessionVisit(identity)
        self.session.card_placed(identity)

    def on_change(self, screen: Screen) -> None:
        stamp = time.perf_counter()
        try:
            self._step(screen, stamp)
        except Exception as err:  # noqa: BLE001  # the controller would swallow it: hand it over
            self.done.put((stamp, err))

    def _step(self, screen: Screen, stamp: float) -> None:
        visit, session = self.visit, self.session
        if screen.id in self.IGNORED or visit is None or session is None:
            return
        if screen.id == "menu":
            if mask_name(visit.card.name) not in screen.text():
                raise RuntimeError("the menu does not greet the resident whose card was placed")
            visit.menu_at = stamp
            self._touch("certificate")
        elif screen.id == "choose_template":
            visit.template_at = time.perf_counter()
            self._touch("template", name="residence")
        elif screen.id == "preview":
            visit.preview_at = stamp
            visit.serial = screen.body.rsplit("：", 1)[-1]
            visit.confirm_at = time.perf_counter()
            self._touch("confirm")
        elif screen.id == "printed":
            if not visit.serial or visit.serial not in screen.text():
                raise RuntimeError("the printed screen names another serial than the preview")
            visit.printed_at = stamp
            self.printed.append(visit.serial)
            self.visit = None
            self.done.put((stamp, visit))
        else:
            raise RuntimeError(f"unexpected screen {screen.id!r} on the certificate path")

    def _touch(self, action: str, **args: str) -> None:
        assert self.session is not None
        if not self.session.touch(action, **args):
            raise RuntimeError(f"touch {action!r} refused on screen {self.session.screen.id}")

    def end_session(self) -> None:
        """结束办理 on the printed screen: the session ends and its personal data goes."""
        assert self.session is not None
        self._touch("end")
        if self.session.state is not State.IDLE:
            raise RuntimeError(f"the session did not end ({self.session.screen.id})")


def _services(desk: CertificateDesk, store: Store, *, follow: bool) -> KioskServices:
    """The kiosk's services as tests/kiosk_session wires them, offline (no sync agent)."""

    def offline() -> bool:
        return False

    return KioskServices(
        households=ResidentCache(store),
        certificates=CertificateService(
            desk, store, preview_width_px=PREVIEW_WIDTH_PX, follow=follow
        ),
        guide=ServiceGuide(store),
        notices=NoticeBoard(store),
        online=offline,
        online_residents=OnlineResidents(None, offline),
        applications=OnlineApplications(None, offline),
        subsidy=SubsidyStatus(),
        checker=CertificateChecker(
            {desk.signing_key.kid: desk.signing_key.verify_key},
            {t.name: t.title for t in desk.templates.values()},
        ),
    )


def _session_visits(
    desk: CertificateDesk,
    store: Store,
    emulator: SamEmulator,
    baudrate: int,
    *,
    runs: int,
    seed: int,
    follow: bool = False,
) -> tuple[list[_SessionVisit], list[str]]:
    """Polled visits through :class:`~kiosk_ui.session.KioskSession` (one warm-up: the first
    preview loads pdfium). ``follow=False``: the printed screen comes once the A4 job is handed
    to CUPS and the receipt acknowledged (the A4 jobs are followed afterwards); True is the
    controller's default, which also waits for CUPS to report the page out. Returns the timed
    visits and the serial of every certificate printed (warm-up included)."""
    today = china_date(time.time())
    cards = [
        card
        for card in (sample_card(i) for i in range(CARDS))
        if card.valid_to is None or card.valid_to >= today  # the controller refuses the others
    ]
    done: Done[_SessionVisit] = queue.Queue()
    resident = _Resident(done)
    runner = ThreadRunner()
    session = KioskSession(
        _services(desk, store, follow=follow), runner=runner, on_change=resident.on_change
    )
    resident.session = session
    try:
        visits = _polled_placements(
            emulator,
            baudrate,
            cards,
            runs=runs,
            seed=seed,
            on_card=resident.on_card,
            done=done,
            warmup=1,
            between=resident.end_session,
            what="session visit",
        )
    finally:
        session.close()
        if not runner.join(30):
            raise RuntimeError("a kiosk session job was still running 30 s after the visits")
    for i, (card, t0, _, visit) in enumerate(visits):
        visit.placed_at = t0
        if visit.card != card or not t0 < visit.menu_at < visit.preview_at < visit.printed_at:
            raise RuntimeError(f"session visit {i}: out of order, or for another card")
    return [visit for *_, visit in visits], resident.printed


def _check_output(
    desk: CertificateDesk,
    a4_queue: SimQueue,
    receipt_model: EscposTcpPrinter,
    followed: int,
    session_serials: list[str],
) -> None:
    """Every certificate came out on paper and every receipt was cut, or the benchmark fails.

    ``followed`` A4 jobs were already followed by the desk; the session's jobs (handed over
    without following) are still in the spool and are followed here: one each, none missing.
    """
    kept = desk.a4.pending()
    if len(kept) != len(session_serials):
        raise RuntimeError(f"{len(session_serials)} printed screens, {len(kept)} A4 jobs spooled")
    for entry in kept:
        desk.a4.follow(entry.key)  # raises if CUPS did not print it
    total = followed + len(session_serials)
    a4_queue.wait_for_output(total, timeout_s=60)
    receipts_out = len(receipt_model.cut_pages)
    if receipts_out != total:
        raise RuntimeError(f"{total} receipts sent, the printer cut {receipts_out}")
    received = bytes(receipt_model.received)
    missing = [s for s in session_serials if s.encode("ascii") not in received]
    if missing:
        raise RuntimeError(f"{len(missing)} printed screens without their receipt")


def run(runs: int = 30, baudrate: int = 115200, seed: int = 20261123) -> list[dict[str, Any]]:
    """Time ``runs`` kiosk visits on simulated hardware: read directly, polled, and polled
    through the session controller (see the module docstring)."""
    if runs < 1:
        raise ValueError("the kiosk benchmark needs at least one run")
    with (
        tempfile.TemporaryDirectory(prefix="linli-bench-kiosk-") as tmp,
        CupsTestServer() as cupsd,
        EscposTcpPrinter(port=0) as receipt_model,
        SamEmulator(baudrate=baudrate, pace=True) as emulator,
        open_store(Path(tmp) / "store.db", key=DeviceKey.generate()) as store,
    ):
        a4_queue = cupsd.add_sim_queue("kioskbench")
        desk = _desk(Path(tmp), cupsd, a4_queue, receipt_model.port, store)
        jobs, times = _direct_visits(desk, emulator, baudrate, runs)
        polled_jobs, polled = _polled_visits(desk, emulator, baudrate, runs, seed)
        jobs += polled_jobs
        for issued in jobs:
            desk.follow(issued)  # raises if CUPS did not print it
        visits, serials = _session_visits(desk, store, emulator, baudrate, runs=runs, seed=seed)
        _check_output(desk, a4_queue, receipt_model, len(jobs), serials)
    n_bytes = exchange_bytes()
    wire = wire_time(n_bytes, baudrate)
    poll_ms = IdCardSection().poll_interval_ms
    polled_read = f"IdCardWatcher, poll every {poll_ms} ms"
    controller = "KioskSession, resident touching each step the instant it shows"

    def budgeted(name: str, samples: list[float], **extra: Any) -> dict[str, Any]:
        p95 = float(np.percentile(samples, 95))
        return summarize(
            name,
            "s",
            samples,
            reference=wire,
            reference_name="idcard_wire_time",
            budget_p95=BUDGET_P95_S,
            within_budget=p95 <= BUDGET_P95_S,
            template="residence",
            **extra,
        )

    return [
        budgeted("kiosk_visit", times["visit"], read="right after the card is placed"),
        budgeted("kiosk_visit_polled", polled, read=polled_read),
        summarize("kiosk_card_read", "s", times["read"], reference=wire, baudrate=baudrate),
        summarize("kiosk_issue", "s", times["issue"], stages="render + A4 hand-over + receipt"),
        *(
            summarize(f"kiosk_{stage}", "s", times[stage])
            for stage in ("render", "hand_over", "receipt")
        ),
        summarize(
            "kiosk_identity_on_screen",
            "s",
            [v.menu_at - v.placed_at for v in visits],
            reference=wire,
            read=polled_read,
            path=controller,
            screen="menu",
        ),
        budgeted(
            "kiosk_certificate_printed",
            [v.printed_at - v.placed_at for v in visits],
            read=polled_read,
            path=controller,
            think_time_s=0,
            screen="printed",
            includes="preview render (kiosk_preview)",
        ),
        summarize(
            "kiosk_preview",
            "s",
            [v.preview_at - v.template_at for v in visits],
            stages="render + PNG preview",
            width_px=PREVIEW_WIDTH_PX,
        ),
        summarize(
            "kiosk_print",
            "s",
            [v.printed_at - v.confirm_at for v in visits],
            stages="audit event + A4 hand-over + receipt",
        ),
        value("idcard_wire_time", "s", 1, wire, bytes=n_bytes, baudrate=baudrate),
    ]
