"""The emulated receipt printer and its front ends: a TCP port (like port 9100 of a network
printer) and a pty (a serial printer). World API: ``pages``, ``received``, ``paper_out()``...

While a fault makes the printer offline it still answers ``DLE EOT`` but throws away what it
should print, which is why the driver asks before sending and keeps receipts spooled.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

from PIL import Image

from device.escpos.errors import EscposStreamError
from hardware_sim.escpos.document import Page
from hardware_sim.escpos.faults import Faults
from hardware_sim.escpos.interpreter import Interpreter
from hardware_sim.escpos.render import render_pages
from hardware_sim.serial_pty import SerialEmulator

log = logging.getLogger(__name__)


class EscposPrinterModel:
    """The printer itself, shared by the front ends: interpreter, faults, everything received."""

    def __init__(self, paper_width_mm: int = 80) -> None:
        self.paper_width_mm = paper_width_mm
        self.faults = Faults()
        self.interpreter = Interpreter()
        self.received = bytearray()
        self.stream_errors: list[EscposStreamError] = []
        self._drop_after: int | None = None
        self.lock = threading.RLock()

    # -- world API -------------------------------------------------------------------------------
    def paper_out(self, on: bool = True) -> None:
        self.faults.paper_out = on

    def near_end(self, on: bool = True) -> None:
        self.faults.near_end = on

    def cover_open(self, on: bool = True) -> None:
        self.faults.cover_open = on

    def offline(self, on: bool = True) -> None:
        self.faults.error = on

    def clear_faults(self) -> None:
        self.faults = Faults()

    def drop_after(self, n_bytes: int) -> None:
        """Cut the link after ``n_bytes`` more bytes (a printer unplugged mid-receipt); once."""
        self._drop_after = n_bytes

    @property
    def document_pages(self) -> list[Page]:
        return self.interpreter.document.printed_pages

    @property
    def pages(self) -> list[Image.Image]:
        """Every printed page rendered (cut pages and the one in progress if not blank)."""
        with self.lock:
            return render_pages(self.document_pages, self.paper_width_mm)

    @property
    def cut_pages(self) -> list[Page]:
        return [p for p in self.interpreter.document.pages if p.cut is not None]

    # -- protocol --------------------------------------------------------------------------------
    def take(self, data: bytes) -> tuple[bytes, bool]:
        """Bytes from the host -> (reply bytes, whether the link must be dropped now)."""
        with self.lock:
            drop = False
            if self._drop_after is not None:
                if len(data) >= self._drop_after:
                    data, drop = data[: self._drop_after], True
                    self._drop_after = None
                else:
                    self._drop_after -= len(data)
            self.received.extend(data)
            self.interpreter.printing = not self.faults.offline
            try:
                queries = self.interpreter.feed(data)
            except EscposStreamError as err:
                log.warning("ESC/POS emulator: %s", err)
                self.stream_errors.append(err)
                self.interpreter.discard_partial()
                queries = []
            reply = bytes(self.faults.status_byte(n) for n in queries)
            if drop:
                self.interpreter.discard_partial()
            return reply, drop

    def disconnected(self) -> None:
        with self.lock:
            self.interpreter.discard_partial()


class EscposTcpPrinter(EscposPrinterModel):
    """The printer on a TCP port (0 = any free port), one connection at a time like port 9100."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9100, paper_width_mm: int = 80):
        super().__init__(paper_width_mm)
        self.host = host
        self._sock = socket.create_server((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    def start(self) -> EscposTcpPrinter:
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, name="escpos-tcp", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> EscposTcpPrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                self._handle(conn)
            self.disconnected()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            reply, drop = self.take(data)
            if drop:
                # RST rather than FIN: the host's next send or recv fails, like a pulled cable.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                return
            if reply:
                with contextlib.suppress(OSError):
                    conn.sendall(reply)


class EscposPtyPrinter(SerialEmulator):
    """The printer behind a pty (a serial receipt printer); dropping the link unplugs the pty."""

    def __init__(
        self, baudrate: int = 9600, link: str | Path | None = None, paper_width_mm: int = 80
    ) -> None:
        super().__init__(baudrate, link=link, pace=False)
        self.model = EscposPrinterModel(paper_width_mm)

    def start(self) -> EscposPtyPrinter:
        super().start()
        return self

    def __enter__(self) -> EscposPtyPrinter:
        return self.start()

    def plug(self) -> None:
        # After a drop the old serving thread unplugged from inside itself; let it leave its loop
        # before plug() clears the stop flag, or it would keep reading the new pty too.
        old = self._thread
        if old is not None and old is not threading.current_thread():
            old.join(timeout=2)
        super().plug()

    def on_bytes(self, data: bytes) -> None:
        reply, drop = self.model.take(data)
        if drop:
            self.model.disconnected()
            self.unplug()
            return
        self.send(reply)
