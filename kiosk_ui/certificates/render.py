"""Rendering a certificate to an A4 PDF: template layout, embedded CJK font, signed verification QR.

Every certificate carries a serial number, the issuing community, the date and a QR whose text is a
credential (device/credential.py) of kind ``certificate``: ``sub`` is the serial and ``digest`` a
keyed hash of the printed content, so the server can confirm a paper is genuine while the QR itself
never carries the ID number or any other personal data. Nothing is drawn until every field is
resolved (fields.py), so missing data never yields a half-filled page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import segno
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas

from device.config import CertificateSection
from device.credential import CredentialClaims, SigningKey, issue, load_signing_key
from device.errors import LinliError
from device.idcard.identity import Identity
from kiosk_ui.certificates.fields import Value, chinese_date, resolve_fields
from kiosk_ui.certificates.fonts import find_cjk_font, register_font
from kiosk_ui.certificates.template import (
    CellBlock,
    ParagraphBlock,
    TableBlock,
    Template,
    TextBlock,
)
from kiosk_ui.certificates.wrap import wrap_text

log = logging.getLogger(__name__)

CHINA_TZ = dt.timezone(dt.timedelta(hours=8), "CST")
"""Certificates are dated in China Standard Time whatever the machine's time zone."""
mm = 72 / 25.4  # points per millimetre
A4 = (210 * mm, 297 * mm)
PAGE_W, PAGE_H = A4
BOTTOM_MARGIN_MM = 10.0
_SERIAL_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
DIGEST_BYTES = 16


class LayoutError(LinliError, ValueError):
    """The filled-in text does not fit the template's layout (it would run off the page)."""


@dataclass(frozen=True, repr=False)
class RenderedCertificate:
    """A rendered certificate. ``fields`` (personal data) and ``salt`` (secret) are never logged."""

    pdf: bytes
    serial: str
    qr_text: str
    template: Template
    fields: dict[str, Value]
    digest: bytes
    salt: bytes

    def __repr__(self) -> str:
        return (
            f"RenderedCertificate(template={self.template.name!r}, serial={self.serial!r}, "
            f"pdf_bytes={len(self.pdf)})"
        )


def load_certificate_key(config: CertificateSection, device_id: str) -> SigningKey:
    """The key that signs certificate QR codes: ``certificate.signing_key``, kid ``key_id`` or
    the device id (DESIGN.md: the key id names the device)."""
    return load_signing_key(config.signing_key, config.key_id or device_id)


def new_serial(issuer: str, today: dt.date) -> str:
    """``{issuer}-{YYYYMMDD}-{8 random base32 chars}``: unique without a counter to keep.

    40 random bits per issuer and day: even 1,000 certificates a day collide with odds ~5e-7.
    """
    tail = "".join(secrets.choice(_SERIAL_ALPHABET) for _ in range(8))
    return f"{issuer}-{today:%Y%m%d}-{tail}"


def content_digest(
    *,
    template: Template,
    serial: str,
    community: str,
    today: dt.date,
    fields: Mapping[str, Value],
    salt: bytes,
) -> bytes:
    """HMAC-SHA256 (keyed by the per-certificate ``salt``) of the printed content, truncated.

    The salt is what keeps the ID number in the content from being guessed back out of the QR;
    whoever confirms a paper needs the salt (reported by the kiosk) and the printed fields.
    """
    content = {
        "template": template.name,
        "serial": serial,
        "community": community,
        "date": today.isoformat(),
        "fields": dict(sorted(fields.items())),
    }
    blob = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hmac.new(salt, blob.encode("utf-8"), hashlib.sha256).digest()[:DIGEST_BYTES]


def _day_start(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), CHINA_TZ).timestamp())


def certificate_claims(
    template: Template,
    *,
    serial: str,
    digest: bytes,
    issuer: str,
    today: dt.date,
    now: float | None,
) -> CredentialClaims:
    """The claims of the verification QR: valid from today 00:00 CST to the end of the last day
    printed (有效期至 today + ``validity_days``), i.e. 00:00 CST of the day after it."""
    start = _day_start(today)
    # cti derived from the serial: unique as the serial is, and equal input gives equal bytes.
    cti = hashlib.sha256(serial.encode("utf-8")).digest()[:8]
    return CredentialClaims(
        kind="certificate",
        sub=serial,
        cti=cti,
        nbf=start,
        exp=_day_start(today + dt.timedelta(days=template.validity_days + 1)),
        iat=int(now) if now is not None else start,
        iss=issuer,
        digest=digest,
        template=template.name,
    )


# --- drawing ------------------------------------------------------------------------------------


class _Page:
    """Millimetre coordinates from the top-left corner, as templates write them."""

    def __init__(self, canvas: Canvas, font: str) -> None:
        self.c = canvas
        self.font = font

    def width_mm(self, text: str, size: float) -> float:
        width: float = pdfmetrics.stringWidth(text, self.font, size)
        return width / mm

    def line(self, text: str, x: float, top: float, size: float, align: str = "left") -> None:
        """One line whose top edge is ``top`` mm from the top of the page."""
        baseline = PAGE_H - top * mm - size * 0.85
        self.c.setFont(self.font, size)
        if align == "center":
            self.c.drawCentredString(x * mm, baseline, text)
        elif align == "right":
            self.c.drawRightString(x * mm, baseline, text)
        else:
            self.c.drawString(x * mm, baseline, text)

    def rect(self, x: float, top: float, w: float, h: float) -> None:
        self.c.rect(x * mm, PAGE_H - (top + h) * mm, w * mm, h * mm, stroke=1, fill=0)

    def qr(self, text: str, x: float, top: float, side: float) -> None:
        """Vector QR (crisp at any printer resolution), dark runs of a row merged into one rect."""
        code = segno.make(text, micro=False, error="m", boost_error=False)
        matrix = code.matrix
        quiet = 4  # modules of white border required around a QR code
        module = side / (len(matrix) + 2 * quiet) * mm
        left, top_pt = x * mm + quiet * module, PAGE_H - top * mm - quiet * module
        path = self.c.beginPath()  # one path: far smaller PDF and faster than a rect per run
        for r, row in enumerate(matrix):
            c = 0
            while c < len(row):
                if not row[c]:
                    c += 1
                    continue
                start = c
                while c < len(row) and row[c]:
                    c += 1
                y = top_pt - (r + 1) * module
                path.rect(left + start * module, y, (c - start) * module, module)
        self.c.setFillColorRGB(0, 0, 0)
        self.c.drawPath(path, stroke=0, fill=1)


def _fill(text: str, values: Mapping[str, Value]) -> str:
    # Placeholders were checked at load time; list fields never reach a text block.
    return text.format_map({k: v for k, v in values.items() if isinstance(v, str)}).strip()


def _check_bottom(bottom_mm: float, where: str) -> None:
    if bottom_mm > A4[1] / mm - BOTTOM_MARGIN_MM:
        raise LayoutError(f"{where}: the filled-in text runs off the bottom of the page")


def _draw_text(page: _Page, block: TextBlock, values: Mapping[str, Value], where: str) -> None:
    text = _fill(block.text, values)
    width = page.width_mm(text, block.size)
    left = {"left": block.x, "center": block.x - width / 2, "right": block.x - width}[block.align]
    if left < 0 or left + width > A4[0] / mm:
        raise LayoutError(f"{where}: the filled-in line is wider than the page")
    page.line(text, block.x, block.y, block.size, block.align)


def _draw_paragraph(
    page: _Page, block: ParagraphBlock, values: Mapping[str, Value], where: str
) -> None:
    leading_mm = (block.leading or block.size * 1.8) / mm
    top = block.y
    for paragraph in _fill(block.text, values).split("\n\n"):
        text = " ".join(paragraph.split("\n")).strip()
        if not text:
            continue
        indent = "\u3000" * block.indent  # ideographic spaces: two characters' indent
        for line in wrap_text(indent + text, lambda s: page.width_mm(s, block.size), block.width):
            _check_bottom(top + leading_mm, where)
            page.line(line, block.x, top, block.size)
            top += leading_mm


def _draw_box(
    page: _Page,
    box: tuple[float, float, float, float],
    text: str,
    *,
    size: float,
    align: str,
    where: str,
) -> None:
    """Text wrapped inside box (x, top, w, h) and centred vertically."""
    x, top, w, h = box
    if not text:
        return
    pad = 1.5
    lines = [
        line
        for part in text.split("\n")
        for line in (wrap_text(part, lambda s: page.width_mm(s, size), w - 2 * pad) or [""])
    ]
    line_h = size * 1.3 / mm
    if len(lines) * line_h > h + 0.01:
        raise LayoutError(f"{where}: the filled-in text does not fit its {w:g}x{h:g} mm box")
    y = top + (h - len(lines) * line_h) / 2 + (line_h - size / mm) / 2
    for line in lines:
        if align == "center":
            page.line(line, x + w / 2, y, size, "center")
        else:
            page.line(line, x + pad, y, size)
        y += line_h


def _draw_cell(page: _Page, block: CellBlock, values: Mapping[str, Value], where: str) -> None:
    box = (block.x, block.y, block.w, block.h)
    if block.border:
        page.rect(*box)
    _draw_box(page, box, _fill(block.text, values), size=block.size, align=block.align, where=where)


def _draw_table(page: _Page, block: TableBlock, values: Mapping[str, Value], where: str) -> None:
    rows = values.get(block.rows)
    rows = rows if isinstance(rows, list) else []
    if len(rows) > block.max_rows:
        raise LayoutError(f"{where}: {len(rows)} rows, the template has room for {block.max_rows}")
    _check_bottom(block.y + (len(rows) + 1) * block.row_height, where)
    header = {c.key: c.title for c in block.columns}
    for i, row in enumerate([header, *rows]):
        x = block.x
        top = block.y + i * block.row_height
        for column in block.columns:
            box = (x, top, column.width, block.row_height)
            page.rect(*box)
            _draw_box(
                page, box, row.get(column.key, ""), size=block.size, align="center", where=where
            )
            x += column.width


def _draw_verification(
    page: _Page, template: Template, qr_text: str, values: Mapping[str, Value], community: str
) -> None:
    spec = template.verification
    page.qr(qr_text, spec.x, spec.y, spec.size)
    lines = [
        f"证明编号：{values['serial']}",
        f"出具单位：{community}",
        f"出具日期：{values['_date']}",
        f"有效期至：{values['_valid_until']}",
        "扫描左侧二维码可核验本证明真伪",
    ]
    top = spec.y + 3
    for line in lines:
        page.line(line, spec.x + spec.size + 4, top, 9)
        top += 5.5


def _draw(
    template: Template, values: Mapping[str, Value], qr_text: str, community: str, font: str
) -> bytes:
    buffer = io.BytesIO()
    # invariant=True: no creation timestamp or random document id, so equal input gives equal bytes.
    canvas = Canvas(buffer, pagesize=A4, invariant=True, pageCompression=1)
    canvas.setTitle(template.title)
    canvas.setAuthor(community)
    canvas.setSubject(str(values["serial"]))
    canvas.setCreator("Linli")
    page = _Page(canvas, font)
    for i, block in enumerate(template.blocks):
        where = f"{template.path or template.name} blocks[{i}] ({block.type})"
        if isinstance(block, TextBlock):
            _draw_text(page, block, values, where)
        elif isinstance(block, ParagraphBlock):
            _draw_paragraph(page, block, values, where)
        elif isinstance(block, CellBlock):
            _draw_cell(page, block, values, where)
        else:
            _draw_table(page, block, values, where)
    _draw_verification(page, template, qr_text, values, community)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def render_certificate(
    template: Template,
    identity: Identity,
    household: Mapping[str, Any],
    *,
    config: CertificateSection,
    key: SigningKey,
    today: dt.date,
    now: float | None = None,
    serial: str | None = None,
    salt: bytes | None = None,
) -> RenderedCertificate:
    """Fill ``template`` for one resident and render it to a one-page A4 PDF.

    ``key.kid`` names the issuer (the device id by default) in the serial and the QR. ``now``
    (Unix time) becomes the QR's ``iat``; without it, today 00:00 CST is used. Raises
    :class:`~kiosk_ui.certificates.fields.MissingFieldError` before drawing anything,
    :class:`LayoutError`, or :class:`~kiosk_ui.certificates.fonts.FontNotFoundError`.
    """
    font = register_font(find_cjk_font(config.font))
    serial = serial or new_serial(key.kid, today)
    values = resolve_fields(
        template, identity, household, community=config.community, today=today, serial=serial
    )
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = content_digest(
        template=template,
        serial=serial,
        community=config.community,
        today=today,
        fields=values,
        salt=salt,
    )
    claims = certificate_claims(
        template, serial=serial, digest=digest, issuer=key.kid, today=today, now=now
    )
    qr_text = issue(claims, key)
    footer = {
        **values,
        "_date": chinese_date(today),
        "_valid_until": chinese_date(today + dt.timedelta(days=template.validity_days)),
    }
    pdf = _draw(template, footer, qr_text, config.community, font)
    log.info(
        "certificate %s rendered for %s: serial %s, %d bytes",
        template.name,
        identity.masked(),
        serial,
        len(pdf),
    )
    return RenderedCertificate(pdf, serial, qr_text, template, values, digest, salt)
