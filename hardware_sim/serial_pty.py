"""A serial emulator's half of a pseudo-terminal: the real pyserial driver runs unchanged on it.

The emulator owns the pty master; the driver opens the slave path (or a stable symlink to it)
exactly as it would open ``/dev/ttyUSB0``. A pty has no baud rate, so both directions are paced here
at the configured rate (10 bits per byte for 8N1) to keep the wire time of the real device: host
bytes reach the emulator, and replies reach the host, no earlier than on the line. Every byte in
both directions is kept in a transcript usable as a golden file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import tty
from pathlib import Path

from hardware_sim.transcript import Transcript, TranscriptEntry

log = logging.getLogger(__name__)

BITS_PER_BYTE_8N1 = 10


def wire_time(n_bytes: int, baudrate: int) -> float:
    """Seconds that ``n_bytes`` take on an 8N1 line at ``baudrate``."""
    return n_bytes * BITS_PER_BYTE_8N1 / baudrate


class SerialEmulator:
    """Base of the pty-backed emulators: a reader thread hands host bytes to :meth:`on_bytes`.

    Subclasses implement :meth:`on_bytes` and answer with :meth:`send`. ``link`` gives the pty a
    stable name (like a udev rule would); :meth:`unplug` and :meth:`plug` make the port disappear
    and come back.
    """

    def __init__(self, baudrate: int, link: str | Path | None = None, pace: bool = True) -> None:
        self.baudrate = baudrate
        self.pace = pace
        self.link = Path(link) if link is not None else None
        self._transcript = Transcript(coalesce=True)
        self._write_lock = threading.Lock()
        self._master = -1
        self._slave = -1
        self._slave_name = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """What a driver opens: the stable link when one was asked for, else the pty slave."""
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def start(self) -> SerialEmulator:
        self.plug()
        return self

    def plug(self) -> None:
        """Create the pty (again) and start serving it."""
        if self.plugged:
            return
        master, slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation, every byte passes as sent.
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_name)
            tmp.replace(self.link)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"{type(self).__name__}-pty", daemon=True
        )
        self._thread.start()
        log.debug("%s serving %s", type(self).__name__, self.path)

    def unplug(self) -> None:
        """Make the port disappear, as when a USB adapter is pulled out."""
        if not self.plugged:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._write_lock:
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._master = self._slave = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def close(self) -> None:
        self.unplug()

    def __enter__(self) -> SerialEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- traffic ---------------------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        """Called from the serving thread with every chunk the host wrote."""
        raise NotImplementedError  # abstract: each emulator defines its protocol

    def send(self, data: bytes, baudrate: int | None = None) -> None:
        """Write ``data`` to the host, paced at the line rate."""
        if not data:
            return
        rate = baudrate or self.baudrate
        self._transcript.record("tx", data)
        start = time.monotonic()
        sent = 0
        chunk = 64
        with self._write_lock:
            while sent < len(data):
                if self._master < 0:
                    return
                piece = data[sent : sent + chunk]
                if self.pace:
                    # Hand a piece over only when its last byte would have arrived on the line:
                    # the host must never have bytes earlier than the real device could send them.
                    delay = start + wire_time(sent + len(piece), rate) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    os.write(self._master, piece)
                except OSError:
                    return
                sent += len(piece)

    @property
    def transcript(self) -> list[TranscriptEntry]:
        return self._transcript.entries

    def clear_transcript(self) -> None:
        self._transcript.clear()

    def transcript_text(self) -> str:
        """The transcript as a golden file: ``> HEX`` host to device, ``< HEX`` device to host."""
        return self._transcript.text()

    def _serve(self) -> None:
        master = self._master
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                continue
            self._transcript.record("rx", data)
            if self.pace:
                # The host's write lands in the pty at once; on the line its last byte arrives
                # only after the wire time, and the device cannot answer before that.
                time.sleep(wire_time(len(data), self.baudrate))
            try:
                self.on_bytes(data)
            except Exception:  # an emulator bug must not kill the port silently
                log.exception("%s failed handling %d bytes", type(self).__name__, len(data))
