"""A private real cupsd with linli-sim queues for the A4 tests (hardware_sim.cups).

A missing cupsd FAILS the tests with what to install: they are the only proof the driver works
through the real daemon.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from device.a4 import A4Printer
from device.config import A4PrinterSection
from hardware_sim.cups import INSTALL_HINT, CupsTestServer, SimQueue

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
NAME = "张三丰"


@pytest.fixture(scope="session")
def cupsd() -> Iterator[CupsTestServer]:
    if shutil.which("cupsd") is None and not Path("/usr/sbin/cupsd").exists():
        pytest.fail(f"cupsd is not installed; {INSTALL_HINT}", pytrace=False)
    # Not under pytest's 0700 tmp tree: CUPS filters run as user lp and must reach the spool.
    server = CupsTestServer()
    server.start()
    yield server
    server.stop()
    server.remove_pdf_configs()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def queue(cupsd: CupsTestServer, request: pytest.FixtureRequest) -> Iterator[SimQueue]:
    """A fresh sim queue per test (no state leaks between tests)."""
    if cupsd.process is None or cupsd.process.poll() is not None:
        cupsd.start()
    name = "sim" + str(abs(hash(request.node.nodeid)) % 10**8)
    sim = cupsd.add_sim_queue(name)
    yield sim
    if cupsd.process is None or cupsd.process.poll() is not None:
        cupsd.start()
    sim.set_mode("ok")
    cupsd.cancel_all(name)


@pytest.fixture
def printer(cupsd: CupsTestServer, queue: SimQueue, tmp_path: Path) -> A4Printer:
    section = A4PrinterSection(queue=queue.name, job_timeout_s=10, poll_interval_s=0.05)
    return A4Printer(section, tmp_path / "spool" / "a4", server=cupsd.socket)


@pytest.fixture(scope="session")
def two_page_pdf() -> bytes:
    """A 2-page A4 PDF with a CJK resident name, embedded WenQuanYi font."""
    if not FONT.exists():
        pytest.fail("WenQuanYi font missing; apt-get install fonts-wqy-microhei", pytrace=False)
    pdfmetrics.registerFont(TTFont("WQY", str(FONT), subfontIndex=0))
    import io

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    for number in (1, 2):
        page.setFont("WQY", 20)
        page.drawString(72, 700, f"居住证明 {NAME} 第{number}页")
        page.showPage()
    page.save()
    return buffer.getvalue()
