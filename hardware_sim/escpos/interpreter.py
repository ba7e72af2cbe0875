"""A pure ESC/POS interpreter: bytes in, a :class:`Document` out (what the paper would show).

Streaming: :meth:`Interpreter.feed` takes bytes as they arrive (commands may be split across
chunks) and returns the ``DLE EOT n`` queries the printer must answer, in order. Commands we do not
draw are skipped by their documented length; a command we do not know, a bad parameter or a stream
that ends inside a command raises :class:`EscposStreamError` with the byte offset, because guessing
the length of an unknown command would print garbage for the rest of the receipt.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from device.escpos.errors import EscposStreamError
from hardware_sim.escpos.document import (
    Align,
    Document,
    Feed,
    Page,
    QrCode,
    Raster,
    Style,
    TextLine,
    TextRun,
)

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
ALIGNS: dict[int, Align] = {
    0: "left",
    1: "center",
    2: "right",
    48: "left",
    49: "center",
    50: "right",
}
QR_ERRORS: dict[int, Literal["L", "M", "Q", "H"]] = {48: "L", 49: "M", 50: "Q", 51: "H"}
CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252", 17: "cp866"}
DEFAULT_SPACING = 30
# ESC x commands with a fixed total length (prefix and command byte included) that we only skip.
ESC_SKIP = {
    ord("2"): 2, ord("L"): 2, ord("S"): 2, ord("<"): 2,
    ord("-"): 3, ord("M"): 3, ord("R"): 3, ord("e"): 3, ord("V"): 3, ord("{"): 3, ord("="): 3,
    ord(" "): 3, ord("%"): 3, ord("r"): 3, ord("T"): 3, ord("U"): 3, ord("?"): 3, ord("G"): 3,
    ord("$"): 4, ord("\\"): 4, ord("B"): 4, ord("p"): 5, ord("W"): 10,
}  # fmt: skip
GS_SKIP = {
    ord("B"): 3, ord("H"): 3, ord("h"): 3, ord("w"): 3, ord("f"): 3, ord("a"): 3, ord("b"): 3,
    ord("|"): 3, ord("/"): 3, ord("T"): 3, ord("r"): 3, ord("I"): 3,
    ord("L"): 4, ord("W"): 4, ord("P"): 4, ord("$"): 4, ord("\\"): 4, ord(":"): 2,
}  # fmt: skip
FS_SKIP = {ord("-"): 3, ord("C"): 3, ord("W"): 3, ord("S"): 4, ord("p"): 4}


class _NeedMore(Exception):
    """The command at the current position is not complete yet (internal)."""


class Interpreter:
    """ESC/POS state machine. ``printing=False`` parses (and answers status) but prints nothing,
    as a printer that is offline throws away what it cannot print."""

    def __init__(self) -> None:
        self.document = Document()
        self.printing = True
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._queries: list[int] = []
        self._reset_modes()

    def _reset_modes(self) -> None:
        self._style = Style()
        self._esc_size = (1, 1)  # ESC ! bits 4-5: alphanumerics only
        self._gs_size = (1, 1)  # GS !: every character
        self._fs_size = (1, 1)  # FS !: Chinese characters
        self._align: Align = "left"
        self._chinese = False
        self._code_page = "cp437"
        self._spacing = DEFAULT_SPACING
        self._line: TextLine | None = None
        self._qr_module, self._qr_data = 3, b""
        self._qr_error: Literal["L", "M", "Q", "H"] = "L"

    # -- public ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[int]:
        """Interpret ``data``; return the ``n`` of every ``DLE EOT n`` met, in order."""
        self._buf.extend(data)
        self._queries = []
        pos = 0
        try:
            while pos < len(self._buf):
                pos = self._step(pos)
        except _NeedMore:
            pass
        finally:
            del self._buf[:pos]
            self._offset += pos
        return self._queries

    def finish(self) -> Document:
        """End of stream: a command left incomplete is an error; the last line is printed."""
        if self._buf:
            raise EscposStreamError(
                f"stream ends inside a command at offset {self._offset}: "
                f"{bytes(self._buf[:8]).hex(' ')}"
            )
        self._end_line()
        return self.document

    def discard_partial(self) -> int:
        """Forget an incomplete command (the connection carrying it is gone); return its size."""
        n = len(self._buf)
        self._offset += n
        self._buf.clear()
        return n

    # -- dispatch --------------------------------------------------------------------------------
    def _need(self, pos: int, n: int) -> None:
        if pos + n > len(self._buf):
            raise _NeedMore

    def _bad(self, pos: int, what: str) -> EscposStreamError:
        return EscposStreamError(f"offset {self._offset + pos}: {what}")

    def _step(self, pos: int) -> int:  # noqa: PLR0911  # one dispatch reads best as one function
        b = self._buf[pos]
        if b == ESC:
            return self._esc(pos)
        if b == GS:
            return self._gs(pos)
        if b == FS:
            return self._fs(pos)
        if b == DLE:
            return self._dle(pos)
        if b in (0x0A, 0x0C):
            self._print_line()
            return pos + 1
        if b == 0x09:
            self._text(" " * (8 - len(self._line.text) % 8 if self._line else 8))
            return pos + 1
        if b < 0x20 or b == 0x7F:
            return pos + 1  # CR, NUL and other controls: ignored by receipt printers
        return self._text_bytes(pos)

    def _text_bytes(self, pos: int) -> int:
        end = pos
        buf = self._buf
        while end < len(buf) and buf[end] >= 0x20 and buf[end] != 0x7F:
            end += 1
        chunk = bytes(buf[pos:end])
        if not self._chinese:
            self._text(chunk.decode(self._code_page, errors="replace"))
            return end
        decoder = codecs.getincrementaldecoder("gb18030")(errors="replace")
        text = decoder.decode(chunk, final=False)
        pending = len(decoder.getstate()[0])
        if pending and end == len(buf):
            # A character split across chunks: print what is complete, wait for the rest.
            if end - pending == pos:
                raise _NeedMore
            self._emit_chinese(text)
            return end - pending
        self._emit_chinese(text + decoder.decode(b"", final=True))
        return end

    def _emit_chinese(self, text: str) -> None:
        # Alphanumerics keep ESC ! sizes; Chinese characters take FS ! (Epson behaviour).
        run = ""
        for ch in text:
            if ord(ch) < 0x80:
                run += ch
                continue
            if run:
                self._text(run)
                run = ""
            self._text(ch, wide=True)
        if run:
            self._text(run)

    # -- ESC ---------------------------------------------------------------------------------------
    def _esc(self, pos: int) -> int:  # noqa: PLR0911  # dispatch on the command byte
        self._need(pos, 2)
        c = self._buf[pos + 1]
        if c == ord("@"):
            self._end_line()
            self._reset_modes()
            return pos + 2
        if c in (ord("i"), ord("m")):
            self._cut(pos, "partial")
            return pos + 2
        if c in ESC_SKIP:
            self._need(pos, ESC_SKIP[c])
            return pos + ESC_SKIP[c]
        if c == ord("*"):
            self._need(pos, 5)
            m, n = self._buf[pos + 2], self._buf[pos + 3] | self._buf[pos + 4] << 8
            if m not in (0, 1, 32, 33):
                raise self._bad(pos, f"ESC * with bad mode {m}")
            total = 5 + n * (3 if m >= 32 else 1)
            self._need(pos, total)
            return pos + total
        if c == ord("c"):
            self._need(pos, 4)
            return pos + 4
        if c == ord("D"):
            end = self._buf.find(b"\x00", pos + 2, pos + 35)
            if end < 0:
                self._need(pos, 35)
                raise self._bad(pos, "ESC D tab list without NUL")
            return end + 1
        self._need(pos, 3)
        n = self._buf[pos + 2]
        handlers: dict[int, Callable[[int, int], None]] = {
            ord("a"): self._set_align,
            ord("E"): lambda p, v: self._set_style(bold=bool(v & 1)),
            ord("!"): self._print_mode,
            ord("t"): self._select_code_page,
            ord("d"): lambda p, v: self._feed_lines(v),
            ord("J"): lambda p, v: self._feed_dots(v),
            ord("3"): lambda p, v: setattr(self, "_spacing", v),
        }
        handler = handlers.get(c)
        if handler is None:
            raise self._bad(pos, f"unknown command ESC 0x{c:02X}")
        handler(pos, n)
        return pos + 3

    def _set_align(self, pos: int, n: int) -> None:
        if n not in ALIGNS:
            raise self._bad(pos, f"ESC a with bad alignment {n}")
        self._align = ALIGNS[n]
        if self._line is not None and not self._line.runs:
            self._line.align = self._align

    def _print_mode(self, pos: int, n: int) -> None:
        self._esc_size = (2 if n & 0x20 else 1, 2 if n & 0x10 else 1)
        self._set_style(bold=bool(n & 0x08), underline=bool(n & 0x80), small=bool(n & 0x01))

    def _select_code_page(self, pos: int, n: int) -> None:
        # Pages we have no table for print as cp437, like a printer missing that page.
        self._code_page = CODE_PAGES.get(n, "cp437")

    # -- GS ----------------------------------------------------------------------------------------
    def _gs(self, pos: int) -> int:  # noqa: PLR0911  # dispatch on the command byte
        self._need(pos, 2)
        c = self._buf[pos + 1]
        if c in GS_SKIP:
            self._need(pos, GS_SKIP[c])
            return pos + GS_SKIP[c]
        if c == ord("!"):
            self._need(pos, 3)
            n = self._buf[pos + 2]
            self._gs_size = ((n >> 4 & 7) + 1, (n & 7) + 1)
            return pos + 3
        if c == ord("V"):
            return self._gs_cut(pos)
        if c == ord("v"):
            return self._raster(pos)
        if c == ord("("):
            return self._gs_paren(pos)
        if c == ord("k"):
            return self._barcode(pos)
        if c == ord("8"):
            self._need(pos, 7)
            size = int.from_bytes(self._buf[pos + 3 : pos + 7], "little")
            self._need(pos, 7 + size)
            return pos + 7 + size
        if c == ord("*"):
            self._need(pos, 4)
            total = 4 + self._buf[pos + 2] * self._buf[pos + 3] * 8
            self._need(pos, total)
            return pos + total
        raise self._bad(pos, f"unknown command GS 0x{c:02X}")

    def _gs_cut(self, pos: int) -> int:
        self._need(pos, 3)
        m = self._buf[pos + 2]
        if m in (0, 48, 1, 49):
            length = 3
        elif m in (65, 66, 97, 98, 103, 104):
            length = 4
        else:
            raise self._bad(pos, f"GS V with bad mode {m}")
        self._need(pos, length)
        if length == 4:
            self._feed_dots(self._buf[pos + 3])
        self._cut(pos, "full" if m in (0, 48, 65, 97, 103) else "partial")
        return pos + length

    def _raster(self, pos: int) -> int:
        self._need(pos, 8)
        if self._buf[pos + 2] not in (0, 48):
            raise self._bad(pos, "GS v: only GS v 0 exists")
        m = self._buf[pos + 3]
        if m not in (0, 1, 2, 3, 48, 49, 50, 51):
            raise self._bad(pos, f"GS v 0 with bad mode {m}")
        xb = self._buf[pos + 4] | self._buf[pos + 5] << 8
        y = self._buf[pos + 6] | self._buf[pos + 7] << 8
        total = 8 + xb * y
        self._need(pos, total)
        if xb and y:
            self._end_line()
            self._add(Raster(xb, y, bytes(self._buf[pos + 8 : pos + total]),
                             2 if m & 1 else 1, 2 if m & 2 else 1, self._align))  # fmt: skip
        return pos + total

    def _gs_paren(self, pos: int) -> int:
        self._need(pos, 5)
        fn = self._buf[pos + 2]
        size = self._buf[pos + 3] | self._buf[pos + 4] << 8
        self._need(pos, 5 + size)
        if fn == ord("k") and size >= 2:
            self._symbol(pos, bytes(self._buf[pos + 5 : pos + 5 + size]))
        return pos + 5 + size

    def _symbol(self, pos: int, body: bytes) -> None:
        cn, fn, args = body[0], body[1], body[2:]
        if cn != 49:
            return  # PDF417, MaxiCode...: stored by the printer, not drawn here
        if fn == 67 and args:
            self._qr_module = min(max(args[0], 1), 16)
        elif fn == 69 and args:
            if args[0] not in QR_ERRORS:
                raise self._bad(pos, f"GS ( k QR error level {args[0]}")
            self._qr_error = QR_ERRORS[args[0]]
        elif fn == 80 and args:
            self._qr_data = args[1:]
        elif fn == 81 and self._qr_data:
            self._end_line()
            self._add(QrCode(self._qr_data, self._qr_module, self._qr_error, self._align))

    def _barcode(self, pos: int) -> int:
        self._need(pos, 3)
        m = self._buf[pos + 2]
        if m <= 6:
            end = self._buf.find(b"\x00", pos + 3)
            if end < 0:
                raise _NeedMore
            return end + 1
        if 65 <= m <= 79:
            self._need(pos, 4)
            total = 4 + self._buf[pos + 3]
            self._need(pos, total)
            return pos + total
        raise self._bad(pos, f"GS k with bad barcode system {m}")

    # -- FS / DLE ----------------------------------------------------------------------------------
    def _fs(self, pos: int) -> int:
        self._need(pos, 2)
        c = self._buf[pos + 1]
        if c == ord("&"):
            self._chinese = True
            return pos + 2
        if c == ord("."):
            self._chinese = False
            return pos + 2
        if c == ord("!"):
            self._need(pos, 3)
            n = self._buf[pos + 2]
            self._fs_size = (2 if n & 0x04 else 1, 2 if n & 0x08 else 1)
            return pos + 3
        if c in FS_SKIP:
            self._need(pos, FS_SKIP[c])
            return pos + FS_SKIP[c]
        if c == ord("("):
            self._need(pos, 5)
            total = 5 + (self._buf[pos + 3] | self._buf[pos + 4] << 8)
            self._need(pos, total)
            return pos + total
        raise self._bad(pos, f"unknown command FS 0x{c:02X}")

    def _dle(self, pos: int) -> int:
        self._need(pos, 3)
        c, n = self._buf[pos + 1], self._buf[pos + 2]
        if c == 0x04:
            if n not in (1, 2, 3, 4):
                raise self._bad(pos, f"DLE EOT with bad n {n}")
            self._queries.append(n)
            return pos + 3
        if c == 0x05:
            return pos + 3
        if c == 0x14:
            self._need(pos, 5)
            return pos + 5
        raise self._bad(pos, f"unknown command DLE 0x{c:02X}")

    # -- building the document -------------------------------------------------------------------
    def _set_style(self, **changes: bool) -> None:
        self._style = replace(self._style, **changes)

    def _text(self, text: str, wide: bool = False) -> None:
        if not self.printing or not text:
            return
        gw, gh = self._gs_size
        ew, eh = self._fs_size if wide else self._esc_size
        style = replace(self._style, width=max(gw, ew), height=max(gh, eh))
        if self._line is None:
            self._line = TextLine(align=self._align, spacing=self._spacing)
        runs = self._line.runs
        if runs and runs[-1].style == style:
            runs[-1] = TextRun(runs[-1].text + text, style)
        else:
            runs.append(TextRun(text, style))

    def _print_line(self) -> None:
        """LF: print the line buffer (an empty one feeds one line)."""
        line = self._line or TextLine(align=self._align, spacing=self._spacing)
        self._line = None
        self._add(line)

    def _end_line(self) -> None:
        """Print what is in the line buffer, if anything (before an image, a cut, ESC @)."""
        if self._line is not None:
            self._print_line()

    def _feed_lines(self, n: int) -> None:
        self._end_line()
        if n:
            self._add(Feed(n * self._spacing))

    def _feed_dots(self, n: int) -> None:
        self._end_line()
        if n:
            self._add(Feed(n))

    def _add(self, block: TextLine | QrCode | Raster | Feed) -> None:
        if self.printing:
            self.document.current.blocks.append(block)

    def _cut(self, pos: int, kind: Literal["full", "partial"]) -> None:
        self._end_line()
        if self.printing:
            self.document.current.cut = kind
            self.document.pages.append(Page())


def interpret(data: bytes) -> Document:
    """The document a complete ESC/POS stream prints; :class:`EscposStreamError` if malformed."""
    interpreter = Interpreter()
    interpreter.feed(data)
    return interpreter.finish()
