"""Shared data for the certificate tests: a signing key, household records, PDF/QR readers."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pypdf
import pypdfium2 as pdfium
import pytest
from pyzbar.pyzbar import ZBarSymbol, decode

from device.config import CertificateSection
from device.credential import SigningKey, generate_signing_key

TODAY = dt.date(2026, 11, 23)
# Noon CST on TODAY, as a Unix time.
NOON = dt.datetime(2026, 11, 23, 12, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
COMMUNITY = "浦东新区幸福社区居民委员会"


def household_record() -> dict[str, Any]:
    """A complete household record: every shipped template can be filled from it."""
    return {
        "household_id": "H-310115-0042",
        "address": "上海市浦东新区幸福路12号3栋2单元501室",
        "residence_since": "2015-06-01",
        "phone": "13800000000",
        "members": [
            {"name": "王伟", "relation": "本人", "gender": "男", "birth": "1950-03-02"},
            {"name": "李芳", "relation": "配偶", "gender": "女", "birth": "1952-07-09"},
            {"name": "王磊", "relation": "儿子", "gender": "男", "birth": "1978-11-30"},
        ],
        "difficulty": {"reason": "家庭成员患重病，医疗支出较大", "monthly_income": 860},
        "elderly": {"level": "80-89周岁档"},
    }


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return generate_signing_key("kiosk-0001")


@pytest.fixture
def household() -> dict[str, Any]:
    return household_record()


@pytest.fixture(scope="session")
def config() -> CertificateSection:
    return CertificateSection(community=COMMUNITY)


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def page_count(pdf: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def embedded_font_files(pdf: bytes) -> list[str]:
    """BaseFont names of the fonts whose outlines are embedded in page 1."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    names = []
    for ref in fonts.values():
        font = ref.get_object()
        descriptor = font.get("/FontDescriptor")
        if descriptor is None and "/DescendantFonts" in font:
            descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
        if descriptor is not None:
            descriptor = descriptor.get_object()
            if any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                names.append(str(font["/BaseFont"]))
    return names


def qr_codes(pdf: bytes, dpi: int = 200) -> list[str]:
    """Render page 1 as a printer would see it and decode every QR code on it."""
    document = pdfium.PdfDocument(pdf)
    try:
        image = document[0].render(scale=dpi / 72).to_pil().convert("L")
    finally:
        document.close()
    return [r.data.decode("ascii") for r in decode(image, symbols=[ZBarSymbol.QRCODE])]
