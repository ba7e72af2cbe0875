"""Draw an emulated receipt page as a PNG, dot for dot (576 dots wide for 80 mm paper at 203 dpi).

Font A cells are 12x24 dots, Chinese characters 24x24 (WenQuanYi Micro Hei, found with fc-match);
QR codes are drawn with segno so the PNG scans like the printed code would.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import unicodedata
from pathlib import Path

import segno
from PIL import Image, ImageDraw, ImageFont, ImageOps

from device.errors import ConfigError
from device.escpos.errors import EscposStreamError
from hardware_sim.escpos.document import Align, Feed, Page, QrCode, Raster, TextLine, TextRun

PAPER_DOTS = {80: 576, 58: 384}
CELL_W, CELL_H = 12, 24
MARGIN = 8
MAX_PAGE_DOTS = 40_000  # 5 m of paper: longer means a runaway stream, not a receipt


@functools.cache
def cjk_font_path() -> str:
    """The CJK font fontconfig picks for WenQuanYi Micro Hei; ConfigError when none is there."""
    if shutil.which("fc-match"):
        out = subprocess.run(  # fixed arguments, no shell
            ["fc-match", "-f", "%{file}", "WenQuanYi Micro Hei:lang=zh-cn"],  # noqa: S607
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout and Path(out.stdout).exists():
            return out.stdout
    raise ConfigError("no CJK font found: install fonts-wqy-microhei (fc-match finds it)")


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(cjk_font_path(), size, index=0)


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _glyphs(run: TextRun) -> list[Image.Image]:
    """One image per character cell of ``run``, scaled by its width/height multipliers."""
    style = run.style
    font = _font(CELL_H)
    cells = []
    for ch in run.text:
        w = CELL_W * (2 if _wide(ch) else 1)
        cell = Image.new("L", (w, CELL_H), 255)
        draw = ImageDraw.Draw(cell)
        draw.text((w / 2, CELL_H / 2), ch, font=font, fill=0, anchor="mm",
                  stroke_width=1 if style.bold else 0, stroke_fill=0)  # fmt: skip
        if style.underline:
            draw.line([(0, CELL_H - 2), (w, CELL_H - 2)], fill=0, width=2)
        if style.invert:
            cell = ImageOps.invert(cell)
        if style.width > 1 or style.height > 1:
            cell = cell.resize((w * style.width, CELL_H * style.height), Image.Resampling.NEAREST)
        cells.append(cell)
    return cells


def _x(align: Align, content: int, width: int) -> int:
    if align == "center":
        return max(0, (width - content) // 2)
    if align == "right":
        return max(0, width - content)
    return 0


def _text_rows(line: TextLine, width: int) -> list[Image.Image]:
    """The line wrapped to the paper width, as row images."""
    cells = [cell for run in line.runs for cell in _glyphs(run)]
    if not cells:
        return [Image.new("L", (width, line.spacing), 255)]
    rows: list[list[Image.Image]] = [[]]
    used = 0
    for cell in cells:
        if used + cell.width > width and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(cell)
        used += cell.width
    images = []
    for row in rows:
        height = max(c.height for c in row)
        img = Image.new("L", (width, height + max(0, line.spacing - CELL_H)), 255)
        x = _x(line.align, sum(c.width for c in row), width)
        for cell in row:
            img.paste(cell, (x, height - cell.height))
            x += cell.width
        images.append(img)
    return images


def _qr(block: QrCode, width: int) -> Image.Image:
    try:
        code = segno.make(block.data, error=block.error, micro=False, boost_error=False)
    except segno.DataOverflowError as err:
        raise EscposStreamError(
            f"QR data too long for a QR code ({len(block.data)} bytes)"
        ) from err
    modules = [bytes(0 if dark else 255 for dark in row) for row in code.matrix_iter(border=4)]
    side = len(modules)
    sym = Image.frombytes("L", (side, side), b"".join(modules))
    sym = sym.resize((side * block.module, side * block.module), Image.Resampling.NEAREST)
    img = Image.new("L", (width, sym.height), 255)
    img.paste(sym, (_x(block.align, sym.width, width), 0))
    return img


def _raster(block: Raster, width: int) -> Image.Image:
    dots = Image.frombytes("1", (block.width_bytes * 8, block.height), block.bits)
    img = ImageOps.invert(dots.convert("L"))  # ESC/POS 1 = black, PIL "1" 1 = white
    if block.scale_x > 1 or block.scale_y > 1:
        img = img.resize((img.width * block.scale_x, img.height * block.scale_y))
    row = Image.new("L", (width, img.height), 255)
    row.paste(img, (_x(block.align, img.width, width), 0))  # wider than paper: clipped
    return row


def render_page(page: Page, paper_width_mm: int = 80) -> Image.Image:
    """The page as a grayscale image, ``PAPER_DOTS[paper_width_mm]`` wide plus margins."""
    width = PAPER_DOTS[paper_width_mm]
    rows: list[Image.Image] = []
    total = 0
    for block in page.blocks:
        if isinstance(block, TextLine):
            new = _text_rows(block, width)
        elif isinstance(block, QrCode):
            new = [_qr(block, width)]
        elif isinstance(block, Raster):
            new = [_raster(block, width)]
        elif isinstance(block, Feed):
            new = [Image.new("L", (width, block.dots), 255)]
        total += sum(r.height for r in new)
        if total > MAX_PAGE_DOTS:
            raise EscposStreamError(f"page longer than {MAX_PAGE_DOTS} dots: runaway feed?")
        rows.extend(new)
    out = Image.new("L", (width + 2 * MARGIN, total + 2 * MARGIN), 255)
    y = MARGIN
    for row in rows:
        out.paste(row, (MARGIN, y))
        y += row.height
    return out


def render_pages(pages: list[Page], paper_width_mm: int = 80) -> list[Image.Image]:
    return [render_page(p, paper_width_mm) for p in pages]
