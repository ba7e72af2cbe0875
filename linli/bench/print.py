"""Benchmark: the residence certificate rendered to PDF, and its PNG preview, for sample cards.

Each sample renders one certificate (fields resolved, QR credential signed, PDF with the CJK font
subset embedded) for a different simulated resident; the font is registered once beforehand, as
the kiosk does at start. The preview is timed separately at the kiosk screen's width.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from device.config import CertificateSection
from device.credential import generate_signing_key
from hardware_sim.idcards import sample_card
from kiosk_ui.certificates import get_template, render_certificate, render_page
from kiosk_ui.certificates.fonts import find_cjk_font, register_font
from linli.bench import summarize

HOUSEHOLD = {
    "address": "上海市浦东新区幸福路12号3栋2单元501室",
    "residence_since": "2015-06-01",
    "members": [{"name": "示例", "relation": "本人"}],
}
PREVIEW_WIDTH_PX = 800


def run(runs: int = 50) -> list[dict[str, Any]]:
    """Time ``runs`` renders and previews of the residence certificate; return the measurements."""
    if runs < 1:
        raise ValueError("the print benchmark needs at least one run")
    config = CertificateSection()
    register_font(find_cjk_font(config.font))
    key = generate_signing_key("bench-kiosk")
    template = get_template("residence")
    today = dt.date(2026, 11, 23)
    render_s: list[float] = []
    preview_s: list[float] = []
    for i in range(runs):
        identity = sample_card(i)
        t0 = time.perf_counter()
        rendered = render_certificate(
            template, identity, HOUSEHOLD, config=config, key=key, today=today
        )
        t1 = time.perf_counter()
        render_page(rendered.pdf, width_px=PREVIEW_WIDTH_PX)
        t2 = time.perf_counter()
        render_s.append(t1 - t0)
        preview_s.append(t2 - t1)
    return [
        summarize("certificate_render", "s", render_s, template="residence"),
        summarize("certificate_preview", "s", preview_s, width_px=PREVIEW_WIDTH_PX),
    ]
