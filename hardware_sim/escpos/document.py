"""What a receipt printer would put on paper: pages of text lines, QR codes, raster images, feeds.

The interpreter builds it from bytes, the renderer draws it, tests read its text directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Align = Literal["left", "center", "right"]


@dataclass(frozen=True)
class Style:
    """Character style in effect for a run (multipliers 1..8 as in ``GS !``)."""

    bold: bool = False
    underline: bool = False
    width: int = 1
    height: int = 1
    invert: bool = False
    small: bool = False  # font B (9x17) instead of font A (12x24)


@dataclass(frozen=True)
class TextRun:
    text: str
    style: Style


@dataclass
class TextLine:
    """One printed line (possibly wider than the paper: the renderer wraps it)."""

    runs: list[TextRun] = field(default_factory=list)
    align: Align = "left"
    spacing: int = 30  # dots from the top of this line to the next one at height 1

    @property
    def text(self) -> str:
        return "".join(run.text for run in self.runs)


@dataclass(frozen=True)
class QrCode:
    """A QR code printed with ``GS ( k`` (the printer draws it from the stored data)."""

    data: bytes
    module: int
    error: Literal["L", "M", "Q", "H"]
    align: Align


@dataclass(frozen=True)
class Raster:
    """A ``GS v 0`` bit image: ``width_bytes * 8`` dots wide, MSB first, 1 = black."""

    width_bytes: int
    height: int
    bits: bytes
    scale_x: int
    scale_y: int
    align: Align


@dataclass(frozen=True)
class Feed:
    dots: int


Block = TextLine | QrCode | Raster | Feed


@dataclass
class Page:
    """Paper between two cuts; ``cut`` is None for the part still in the printer."""

    blocks: list[Block] = field(default_factory=list)
    cut: Literal["full", "partial"] | None = None

    @property
    def lines(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, TextLine)]

    @property
    def qr_codes(self) -> list[QrCode]:
        return [b for b in self.blocks if isinstance(b, QrCode)]

    @property
    def empty(self) -> bool:
        return not any(
            not isinstance(b, TextLine | Feed) or (isinstance(b, TextLine) and b.text.strip())
            for b in self.blocks
        )


@dataclass
class Document:
    """Every page received: cut pages first, then the one still being printed."""

    pages: list[Page] = field(default_factory=lambda: [Page()])

    @property
    def current(self) -> Page:
        return self.pages[-1]

    @property
    def printed_pages(self) -> list[Page]:
        """Cut pages, plus the last one if anything is printed on it."""
        return [p for p in self.pages if p.cut is not None or not p.empty]

    @property
    def text(self) -> str:
        return "\n".join(line for page in self.pages for line in page.lines)
