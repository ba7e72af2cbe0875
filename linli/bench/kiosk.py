"""Benchmark: ID card placed -> certificate handed to the CUPS queue and receipt bytes sent.

Everything is the real driver stack on simulated hardware: the SAM reader emulator behind a pty
(replies paced at the line rate) read by :class:`~device.idcard.reader.SamReader`; the certificate
rendered and signed by :class:`~kiosk_ui.issuing.CertificateDesk`; the PDF sealed into the spool and
handed to a private real ``cupsd`` (``linli-sim`` queue) through pycups; the receipt status-checked
and sent to the ESC/POS emulator on TCP through python-escpos, acknowledged by its ``DLE EOT``
reply. Each sample runs from the moment the card is put on the reader to the moment the receipt is
acknowledged. One warm-up visit (font registration, first CUPS connection) is not counted, as the
kiosk does that once at start. The reader's wire time for the same exchange is the reference.

After the timed visits every A4 job is followed to completion and every receipt is checked on the
emulator, so a benchmark that "finished fast" by losing output fails instead of reporting.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.config import A4PrinterSection, CertificateSection, ReceiptPrinterSection
from device.credential import generate_signing_key
from device.escpos.printer import ReceiptPrinter
from device.idcard.reader import SamReader
from hardware_sim.cups import CupsTestServer
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from hardware_sim.serial_pty import wire_time
from kiosk_ui.certificates import load_templates
from kiosk_ui.issuing import CertificateDesk, MemoryHouseholds
from linli.bench import summarize, value
from linli.bench.idcard import exchange_bytes

BUDGET_P95_S = 0.5
"""DESIGN.md's budget for this path."""
CARDS = 8


def household(i: int) -> dict[str, Any]:
    return {
        "address": f"上海市浦东新区幸福路{12 + i}号3栋2单元501室",
        "residence_since": "2015-06-01",
        "members": [{"name": "示例", "relation": "本人"}],
    }


def run(runs: int = 30, baudrate: int = 115200) -> list[dict[str, Any]]:
    """Time ``runs`` kiosk visits on simulated hardware; return the measurements."""
    if runs < 1:
        raise ValueError("the kiosk benchmark needs at least one run")
    cards = [sample_card(i) for i in range(CARDS)]
    households = MemoryHouseholds({c.id_number: household(i) for i, c in enumerate(cards)})
    at_rest = DeviceKey.generate()
    total: list[float] = []
    read_s: list[float] = []
    issue_s: list[float] = []
    stages: dict[str, list[float]] = {"render": [], "hand_over": [], "receipt": []}
    with (
        tempfile.TemporaryDirectory(prefix="linli-bench-kiosk-") as tmp,
        CupsTestServer() as cupsd,
        EscposTcpPrinter(port=0) as receipt_model,
        SamEmulator(baudrate=baudrate, pace=True) as emulator,
        SamReader(port=emulator.path, baudrate=baudrate, timeout_s=2.0, retries=0) as reader,
    ):
        queue = cupsd.add_sim_queue("kioskbench")
        a4 = A4Printer(
            A4PrinterSection(queue=queue.name, job_timeout_s=30, poll_interval_s=0.05),
            Path(tmp) / "spool" / "a4",
            server=cupsd.socket,
            key=at_rest,
        )
        receipts = ReceiptPrinter(
            ReceiptPrinterSection(backend="network", tcp_port=receipt_model.port, timeout_s=2),
            Path(tmp) / "spool" / "receipt",
            key=at_rest,
        )
        config = CertificateSection()
        desk = CertificateDesk(
            templates=load_templates(config.templates_dir),
            households=households,
            config=config,
            signing_key=generate_signing_key("bench-kiosk"),
            a4=a4,
            receipts=receipts,
        )
        jobs = []
        for i in range(runs + 1):
            card = cards[i % CARDS]
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
            total.append(t2 - t0)
            read_s.append(t1 - t0)
            issue_s.append(t2 - t1)
            for stage, seconds in issued.stages_s.items():
                stages[stage].append(seconds)
        for issued in jobs:
            desk.follow(issued)  # raises if CUPS did not print it
        queue.wait_for_output(runs + 1, timeout_s=60)
        receipts_out = len(receipt_model.cut_pages)
        if receipts_out != runs + 1:
            raise RuntimeError(f"{runs + 1} receipts sent, the printer cut {receipts_out}")
    n_bytes = exchange_bytes()
    wire = wire_time(n_bytes, baudrate)
    p95 = summarize("kiosk_visit", "s", total)["p95"]
    return [
        summarize(
            "kiosk_visit",
            "s",
            total,
            reference=wire,
            reference_name="idcard_wire_time",
            budget_p95=BUDGET_P95_S,
            within_budget=p95 <= BUDGET_P95_S,
            template="residence",
        ),
        summarize("kiosk_card_read", "s", read_s, reference=wire, baudrate=baudrate),
        summarize("kiosk_issue", "s", issue_s, stages="render + A4 hand-over + receipt"),
        *(summarize(f"kiosk_{stage}", "s", samples) for stage, samples in stages.items()),
        value("idcard_wire_time", "s", 1, wire, bytes=n_bytes, baudrate=baudrate),
    ]
