"""The kiosk's output side on simulated hardware, for the demo: certificates and receipts printed.

:class:`PrintingKiosk` starts a private real ``cupsd`` with a ``printer-driver-cups-pdf`` queue (the
"A4 printer", whose paper is a PDF file) and the ESC/POS emulator on TCP (the "receipt printer",
whose paper is a PNG), and wires the real :class:`~kiosk_ui.issuing.CertificateDesk` to them. Each
ID card read becomes a residence certificate: the page lands in ``workdir/printed/SERIAL.pdf`` once
CUPS reports the job completed, the receipt in ``workdir/receipts/SERIAL.png``; the QR on both
verifies with ``workdir/certificate-public.pem``.

Every simulated resident has a household record (:class:`SampleHouseholds`); root is needed, as
for :class:`~hardware_sim.cups.CupsTestServer`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from device.a4 import A4Printer, A4PrinterError
from device.a4.cups_printer import cups_title
from device.atrest import DeviceKey
from device.config import A4PrinterSection, CertificateSection, ReceiptPrinterSection
from device.credential import generate_signing_key, save_verify_key
from device.errors import LinliError
from device.escpos.printer import ReceiptPrinter
from device.idcard.identity import Identity
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from kiosk_ui.certificates import load_templates
from kiosk_ui.issuing import CertificateDesk, IssuedCertificate

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


class SampleHouseholds:
    """A household record for every simulated resident (the street number follows the ID)."""

    def household_for(self, identity: Identity) -> Mapping[str, Any] | None:
        number = int(identity.id_number[14:17]) % 200 + 1
        return {
            "address": f"上海市浦东新区幸福路{number}号",
            "residence_since": "2015-06-01",
            "members": [{"name": identity.name, "relation": "本人"}],
        }


class PrintingKiosk:
    """See the module docstring. ``report`` receives one JSON-able dict per certificate."""

    def __init__(
        self,
        workdir: Path,
        *,
        device_id: str = "sim-kiosk-1",
        template: str = "residence",
        report: Report | None = None,
    ) -> None:
        self.workdir = workdir
        self.device_id = device_id
        self.template = template
        self.report: Report = report or (lambda line: None)
        self.printed_dir = workdir / "printed"
        self.receipts_dir = workdir / "receipts"
        self.cupsd = CupsTestServer()
        self.receipt_printer = EscposTcpPrinter(port=0)
        self.queue: SimQueue | None = None
        self.public_key: Path | None = None
        self.desk: CertificateDesk | None = None
        self._followers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a4-follow")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()
        self.issued = 0
        self.pages_out = 0

    def start(self) -> PrintingKiosk:
        self.printed_dir.mkdir(parents=True, exist_ok=True)
        self.receipts_dir.mkdir(parents=True, exist_ok=True)
        self.cupsd.start()
        try:
            self.queue = self.cupsd.add_pdf_queue("linli-a4")
            self.receipt_printer.start()
            at_rest = DeviceKey.for_data_dir(self.workdir / "data")
            signing_key = generate_signing_key(self.device_id)
            # What `linli certificate verify --public-key` needs to check a printed QR.
            self.public_key = self.workdir / "certificate-public.pem"
            save_verify_key(signing_key.verify_key, self.public_key)
            config = CertificateSection()
            self.desk = CertificateDesk(
                templates=load_templates(config.templates_dir),
                households=SampleHouseholds(),
                config=config,
                signing_key=signing_key,
                a4=A4Printer(
                    A4PrinterSection(queue=self.queue.name, job_timeout_s=60, poll_interval_s=0.1),
                    self.workdir / "data" / "spool" / "a4",
                    server=self.cupsd.socket,
                    key=at_rest,
                ),
                receipts=ReceiptPrinter(
                    ReceiptPrinterSection(
                        backend="network", tcp_port=self.receipt_printer.port, timeout_s=2
                    ),
                    self.workdir / "data" / "spool" / "receipt",
                    key=at_rest,
                ),
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self, wait_s: float = 60.0) -> None:
        """Wait (up to ``wait_s``) for pages still printing, then stop both printers."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            try:
                future.result(timeout=wait_s)
            except Exception as err:  # noqa: BLE001  # already reported by _follow
                log.debug("A4 job ended with %s", err)
        self._followers.shutdown(wait=False, cancel_futures=True)
        self.receipt_printer.close()
        self.cupsd.stop()
        self.cupsd.remove_pdf_configs()
        shutil.rmtree(self.cupsd.root, ignore_errors=True)

    def __enter__(self) -> PrintingKiosk:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_card(self, identity: Identity) -> IssuedCertificate | None:
        """Issue the certificate for a card just read; failures are reported, never raised."""
        assert self.desk is not None, "start() first"
        try:
            issued = self.desk.issue(identity, self.template)
        except LinliError as err:
            self.report({"event": "certificate", "error": type(err).__name__, "message": str(err)})
            return None
        self.issued += 1
        line: dict[str, Any] = {
            "event": "certificate",
            "serial": issued.serial,
            "template": self.template,
            "a4": "handed to CUPS",
            "receipt": "printed"
            if issued.receipt_printed
            else type(issued.receipt_problem).__name__,
            "seconds": round(sum(issued.stages_s.values()), 3),
        }
        if issued.receipt_printed:
            target = self.receipts_dir / f"{issued.serial}.png"
            self.receipt_printer.pages[-1].save(target)
            line["receipt_png"] = str(target)
        self.report(line)
        with self._lock:
            self._pending.append(self._followers.submit(self._follow, issued))
        return issued

    def _follow(self, issued: IssuedCertificate) -> None:
        assert self.desk is not None and self.queue is not None
        try:
            self.desk.follow(issued)
        except A4PrinterError as err:
            self.report({"event": "a4", "serial": issued.serial, "error": str(err)})
            raise
        # cups-pdf names its file after the job title (the neutral one CUPS was given).
        made = sorted(self.queue.out_dir.glob(f"{cups_title(issued.a4_job)}*.pdf"))
        if not made:
            message = f"CUPS completed the job but cups-pdf wrote no file in {self.queue.out_dir}"
            self.report({"event": "a4", "serial": issued.serial, "error": message})
            raise FileNotFoundError(message)
        target = self.printed_dir / f"{issued.serial}.pdf"
        shutil.move(made[0], target)
        self.pages_out += 1
        self.report({"event": "a4", "serial": issued.serial, "printed": str(target)})
