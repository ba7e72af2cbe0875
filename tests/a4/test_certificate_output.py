"""A rendered certificate printed through a real cupsd onto a printer-driver-cups-pdf queue.

What comes out of the "printer" is checked the way a person at the counter would: one page, the
resident's name on it, and a verification QR that scans and verifies with the kiosk's key.
"""

from __future__ import annotations

from pathlib import Path

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.config import A4PrinterSection, CertificateSection
from device.credential import generate_signing_key, verify
from hardware_sim.cups import CupsTestServer
from hardware_sim.idcards import sample_card
from kiosk_ui.certificates import get_template, render_certificate
from tests.certificates.conftest import (
    NOON,
    TODAY,
    household_record,
    page_count,
    pdf_text,
    qr_codes,
)


def test_certificate_comes_out_whole(cupsd: CupsTestServer, tmp_path: Path) -> None:
    key = generate_signing_key("kiosk-0001")
    resident = sample_card(3)
    rendered = render_certificate(
        get_template("residence"),
        resident,
        household_record(),
        config=CertificateSection(community="浦东新区幸福社区居民委员会"),
        key=key,
        today=TODAY,
        now=NOON,
    )
    queue = cupsd.add_pdf_queue("certpdf")
    section = A4PrinterSection(queue=queue.name, job_timeout_s=30, poll_interval_s=0.05)
    printer = A4Printer(section, tmp_path / "spool", server=cupsd.socket, key=DeviceKey.generate())

    printer.submit(rendered.pdf, f"居住证明 {rendered.serial}")

    (out,) = queue.wait_for_output(1, timeout_s=30)
    printed = out.read_bytes()
    assert printed != rendered.pdf, "cups-pdf re-renders the page; this must be its output"
    assert page_count(printed) == 1
    assert resident.name in pdf_text(printed)
    (code,) = qr_codes(printed)
    claims = verify(code, {key.kid: key.verify_key}, audience=None, now=NOON)
    assert claims.kind == "certificate"
    assert claims.sub == rendered.serial
    assert printer.pending() == []
