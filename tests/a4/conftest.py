"""A4 printer fixtures on the private real cupsd of tests/conftest.py (hardware_sim.cups)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.config import A4PrinterSection
from hardware_sim.cups import CupsTestServer, SimQueue

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
NAME = "张三丰"


@pytest.fixture
def printer(
    cupsd: CupsTestServer, queue: SimQueue, tmp_path: Path, device_key: DeviceKey
) -> A4Printer:
    section = A4PrinterSection(queue=queue.name, job_timeout_s=10, poll_interval_s=0.05)
    return A4Printer(section, tmp_path / "spool" / "a4", server=cupsd.socket, key=device_key)


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
