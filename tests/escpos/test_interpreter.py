"""ESC/POS interpreter and renderer: python-escpos streams render, QR codes scan, garbage fails."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as hs
from PIL import Image, ImageDraw
from pyzbar.pyzbar import decode

from device.escpos.errors import EscposStreamError
from device.escpos.receipt import Receipt, build_receipt
from hardware_sim.escpos.document import QrCode, Raster
from hardware_sim.escpos.interpreter import Interpreter, interpret
from hardware_sim.escpos.render import MARGIN, render_page

RECEIPT = build_receipt(
    Receipt(title="居住证明回执", lines=["No. 2026-0001", "姓名: 张*"], qr="LQ1:abc", footer="谢谢")
)


def _python_escpos_stream(native_qr: bool = True) -> bytes:
    p = Dummy(profile="TM-T88V")  # a profile with a paper width, so image() checks it
    p.hw("INIT")
    p.set(align="center", bold=True, double_width=True, double_height=True)
    p.textln("RECEIPT")
    p.set(align="left", bold=False, normal_textsize=True)
    p.textln("plain line")
    p.set(align="right")
    p.textln("right")
    p.qr("https://linli.example/v/42", native=native_qr, size=6)
    img = Image.new("1", (96, 40), 1)
    ImageDraw.Draw(img).rectangle((0, 0, 95, 39), fill=0)
    p.set(align="left")
    p.image(img)
    p.cut()
    return bytes(p.output)


def _dark(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L")) < 128


def test_python_escpos_stream_renders_text_qr_image_and_cut() -> None:
    document = interpret(_python_escpos_stream())
    page = document.pages[0]
    assert page.cut == "full"
    assert page.lines[:3] == ["RECEIPT", "plain line", "right"]
    title, _, right = (b for b in page.blocks[:3])
    assert title.runs[0].style.bold and title.runs[0].style.width == 2  # type: ignore[union-attr]
    assert title.align == "center" and right.align == "right"  # type: ignore[union-attr]
    assert [b.data for b in page.blocks if isinstance(b, QrCode)] == [b"https://linli.example/v/42"]
    assert any(isinstance(b, Raster) and b.width_bytes == 12 for b in page.blocks)
    image = render_page(page)
    assert image.width == 576 + 2 * MARGIN
    assert [c.data for c in decode(image)] == [b"https://linli.example/v/42"]


def test_raster_image_is_drawn_black() -> None:
    page = interpret(_python_escpos_stream()).pages[0]
    index = next(i for i, b in enumerate(page.blocks) if isinstance(b, Raster))
    image = render_page(type(page)(blocks=page.blocks[index : index + 1]))
    dark = _dark(image)
    assert dark[MARGIN : MARGIN + 40, MARGIN : MARGIN + 96].all()
    assert not dark[MARGIN:, MARGIN + 100 :].any()


def test_python_escpos_image_qr_scans_after_rendering() -> None:
    page = interpret(_python_escpos_stream(native_qr=False)).pages[0]
    assert not page.qr_codes  # sent as a GS v 0 picture, not GS ( k
    assert [c.data for c in decode(render_page(page))] == [b"https://linli.example/v/42"]


def test_receipt_chinese_text_and_qr() -> None:
    document = interpret(RECEIPT)
    assert document.pages[0].lines[:3] == ["居住证明回执", "No. 2026-0001", "姓名: 张*"]
    assert "谢谢" in document.pages[0].lines
    title = document.pages[0].blocks[0]
    assert title.runs[0].style.width == 2 and title.runs[0].style.height == 2  # type: ignore[union-attr]
    image = render_page(document.pages[0])
    assert [c.data for c in decode(image)] == [b"LQ1:abc"]
    dark = _dark(image)
    # The double-size title (6 Chinese characters = 288 dots) is centred in the top 48 rows.
    title_rows = dark[MARGIN : MARGIN + 48]
    assert title_rows[:, MARGIN + 144 : MARGIN + 432].mean() > 0.1
    assert not title_rows[:, : MARGIN + 130].any()


def test_cuts_are_page_breaks() -> None:
    document = interpret(RECEIPT + RECEIPT + b"tail\n")
    assert [p.cut for p in document.pages] == ["full", "full", None]
    assert len(document.printed_pages) == 3
    assert document.pages[2].lines == ["tail"]


def test_dle_eot_queries_are_reported_in_order() -> None:
    interpreter = Interpreter()
    assert interpreter.feed(b"ab\x10\x04\x01cd\x10\x04") == [1]
    assert interpreter.feed(b"\x04\n") == [4]
    assert interpreter.finish().text == "abcd"


@pytest.mark.parametrize(
    "stream",
    [b"\x1b\xff", b"\x1d\x01", b"\x1c\xf0", b"\x10\x04\x09", b"\x1dV\x07", b"\x1ba\x07"],
    ids=["ESC ?", "GS ?", "FS ?", "DLE EOT 9", "GS V bad", "ESC a bad"],
)
def test_malformed_streams_are_typed_errors(stream: bytes) -> None:
    with pytest.raises(EscposStreamError, match="offset 0"):
        interpret(stream)


def test_truncated_command_is_an_error() -> None:
    with pytest.raises(EscposStreamError, match="ends inside a command"):
        interpret(RECEIPT[:-1])
    with pytest.raises(EscposStreamError):
        interpret(b"\x1dv0\x00\xff\xff\xff\xff")  # a 4 GB picture announced, nothing sent


def test_runaway_feed_is_refused_by_the_renderer() -> None:
    page = interpret(b"\x1bd\xff" * 200).pages[0]
    with pytest.raises(EscposStreamError, match="page longer"):
        render_page(page)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for where, value in edits:
        if out:
            out[where % len(out)] = value
    return bytes(out)


@settings(max_examples=300, deadline=2000)
@given(hs.binary(max_size=400))
def test_random_bytes_give_a_document_or_a_stream_error(data: bytes) -> None:
    start = time.monotonic()
    with contextlib.suppress(EscposStreamError):
        interpret(data)
    assert time.monotonic() - start < 1


@settings(max_examples=200, deadline=5000)
@given(hs.lists(hs.tuples(hs.integers(0, 10_000), hs.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_receipts_give_a_document_or_a_stream_error(edits: list[tuple[int, int]]) -> None:
    try:
        document = interpret(_mutate(RECEIPT, edits))
    except EscposStreamError:
        return
    for page in document.printed_pages:
        with contextlib.suppress(EscposStreamError):
            render_page(page)


@settings(max_examples=100, deadline=2000)
@given(hs.lists(hs.integers(1, 64), min_size=1, max_size=40))
def test_chunking_does_not_change_the_document(sizes: list[int]) -> None:
    interpreter = Interpreter()
    pos = 0
    for size in sizes:
        interpreter.feed(RECEIPT[pos : pos + size])
        pos += size
    interpreter.feed(RECEIPT[pos:])
    assert interpreter.finish() == interpret(RECEIPT)
