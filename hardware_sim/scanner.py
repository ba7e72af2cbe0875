"""GM65-family serial QR module emulator on a pty, with a world API (``show(text)``) and faults.

The host sees a 9600-baud module: every shown code arrives as text + CR (or CRLF), command frames
``7E 00 ...`` are answered with ``02 00 00 ...`` frames, and in command-triggered mode a code shown
to the lens is sent only after the host's trigger command. Faults: garbage bytes, non-UTF-8,
over-long and control-character payloads, a silent module (no answers) and unplug/replug (base
class).
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

from device.errors import ProtocolError
from device.scanner import gm65
from hardware_sim.serial_pty import SerialEmulator

log = logging.getLogger(__name__)


class Gm65Emulator(SerialEmulator):
    """A GM65 module behind a pty.

    ``terminator``: what ends every line (``b"\\r"`` by default, ``b"\\r\\n"`` on modules set so).
    ``command_mode``: codes shown wait in front of the lens until the host triggers a scan.
    ``silent``: the module swallows commands without answering (fault).
    """

    def __init__(
        self,
        baudrate: int = 9600,
        link: str | Path | None = None,
        pace: bool = True,
        terminator: bytes = b"\r",
        command_mode: bool = False,
    ) -> None:
        super().__init__(baudrate, link=link, pace=pace)
        self.terminator = terminator
        self.command_mode = command_mode
        self.silent = False
        self.registers = bytearray(0x100)
        self.saved = bytearray(self.registers)
        self.commands: list[gm65.CommandFrame] = []
        self._held: str | None = None
        self._rx = bytearray()
        self._state_lock = threading.Lock()

    # -- world API -------------------------------------------------------------------------------
    def show(self, text: str) -> None:
        """Hold a code in front of the lens: sent now, or at the next trigger in command mode."""
        if self.command_mode:
            with self._state_lock:
                self._held = text
            return
        self.send_line(text.encode("utf-8"))

    def clear(self) -> None:
        """Take the code away from the lens (command mode: the next trigger reads nothing)."""
        with self._state_lock:
            self._held = None

    def send_line(self, payload: bytes) -> None:
        """Send raw payload bytes followed by the line terminator."""
        self.send(payload + self.terminator)

    # -- faults ----------------------------------------------------------------------------------
    def send_garbage(self, n: int = 32, seed: int = 0) -> bytes:
        """Line noise: ``n`` random bytes without a terminator (returned for the test's record)."""
        data = random.Random(seed).randbytes(n)  # noqa: S311  # noise, not a secret
        self.send(data)
        return data

    def show_non_utf8(self) -> None:
        """A payload that is not UTF-8 (a GBK-encoded module setting, say)."""
        self.send_line("居住证明".encode("gbk"))

    def show_too_long(self, n: int) -> None:
        """An ``n``-byte payload (above the host's ``max_length`` to test the limit)."""
        self.send_line(b"A" * n)

    def show_control_characters(self) -> None:
        """A payload with an ESC and a NUL inside (a keyboard-wedge style injection)."""
        self.send_line(b"LQ1:AB\x1bCD\x00EF")

    # -- protocol --------------------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        self._rx.extend(data)
        while True:
            start = self._rx.find(gm65.COMMAND_HEAD)
            if start < 0:
                # Keep a trailing 7E: it may be the first half of the next header.
                del self._rx[: max(0, len(self._rx) - 1)]
                return
            del self._rx[:start]
            total = gm65.command_length(bytes(self._rx[:4]))
            if total is None or len(self._rx) < total:
                return
            frame = bytes(self._rx[:total])
            del self._rx[:total]
            self._handle(frame)

    def _handle(self, frame: bytes) -> None:
        try:
            command = gm65.parse_command(frame)
        except ProtocolError as err:
            log.debug("GM65 emulator ignored a bad command: %s", err)
            return  # a real module stays quiet on a frame it cannot check
        self.commands.append(command)
        if self.silent:
            return
        reply = self._execute(command)
        self.send(reply + self._scan_after(command))

    def _execute(self, command: gm65.CommandFrame) -> bytes:
        kind, address = command.kind, command.address
        if kind is gm65.CommandType.READ:
            count = command.data[0] or 1
            end = min(address + count, len(self.registers))
            return gm65.build_response(bytes(self.registers[address:end]) or b"\x00")
        if kind is gm65.CommandType.WRITE:
            end = min(address + len(command.data), len(self.registers))
            self.registers[address:end] = command.data[: end - address]
            return gm65.ACK
        self.saved = bytearray(self.registers)
        return gm65.ACK

    def _scan_after(self, command: gm65.CommandFrame) -> bytes:
        is_trigger = (
            command.kind is gm65.CommandType.WRITE
            and command.address == gm65.TRIGGER_ADDRESS
            and command.data[:1] == bytes([gm65.TRIGGER_VALUE])
        )
        with self._state_lock:
            held = self._held if is_trigger else None
        # No code in view -> nothing is sent after the ACK (HARDWARE.md).
        return held.encode("utf-8") + self.terminator if held is not None else b""
