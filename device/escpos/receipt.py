"""Receipt bytes built with python-escpos's command layer; Chinese goes out as GB18030 raw bytes.

python-escpos's own text encoder mangles Chinese (HARDWARE.md: issues #269, #491), so any line
that is not pure ASCII is wrapped in Chinese mode (``FS &`` ... ``FS .``) and written with ``_raw``.
Everything else (alignment, bold, size, native QR, cut) is python-escpos's, so what we send is what
the library would send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from escpos.constants import QR_ECLEVEL_M
from escpos.printer import Dummy

CHINESE_ON = b"\x1c\x26"
CHINESE_OFF = b"\x1c\x2e"


@dataclass(frozen=True)
class Receipt:
    """A slip for the resident: a title, body lines, an optional QR code and a footer.

    Put only masked personal data in it (device.privacy): a receipt can be left on the kiosk.
    """

    title: str
    lines: Sequence[str] = field(default_factory=tuple)
    qr: str | None = None
    footer: str | None = None
    # Dots per QR module (1..16); 6 gives a ~25 mm code on 203 dpi paper for a short URL.
    qr_module: int = 6


def write_text(printer: Dummy, text: str, double: bool = False) -> None:
    """One line of text: ASCII through python-escpos, anything else as GB18030 in Chinese mode.

    ``ESC !`` sizes do not apply to Chinese characters on Epson-style printers, so a double-size
    Chinese line also sets ``FS !`` (bits 2 and 3) and clears it afterwards.
    """
    if text.isascii():
        printer.textln(text)
        return
    size_on, size_off = (b"\x1c!\x0c", b"\x1c!\x00") if double else (b"", b"")
    printer._raw(CHINESE_ON + size_on + text.encode("gb18030") + size_off + CHINESE_OFF + b"\n")


def build_receipt(receipt: Receipt, profile: str = "default") -> bytes:
    """The complete ESC/POS byte stream of one receipt, from init to cut."""
    if not 1 <= receipt.qr_module <= 16:
        raise ValueError(f"qr_module must be 1..16, got {receipt.qr_module}")
    p = Dummy(profile=profile)
    p.hw("INIT")
    p.set(align="center", bold=True, double_width=True, double_height=True)
    write_text(p, receipt.title, double=True)
    p.set(align="left", bold=False, normal_textsize=True)
    for line in receipt.lines:
        write_text(p, line)
    if receipt.qr:
        p.set(align="center")
        p.qr(receipt.qr, native=True, size=receipt.qr_module, ec=QR_ECLEVEL_M)
        p.ln()
    if receipt.footer:
        p.set(align="center")
        write_text(p, receipt.footer)
    p.cut()
    return bytes(p.output)
