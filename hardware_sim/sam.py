"""Emulator of a SAM ID-card reader (HARDWARE.md section 1) on a pty, for the real ``SamReader``.

Cards are data (:class:`~device.idcard.identity.Identity`): ``insert(card)`` puts one on the
reader, ``lift()`` takes it off. Like real readers, after a successful read ``find card`` fails
until the card is lifted and put back (``refind_after_read=True`` emulates readers that keep
finding it). Faults are queued per command and consumed by the next matching request: a failure
status, a corrupted checksum, a truncated reply, a card lifted mid-read, garbage before the frame,
no answer; plus a slow or entirely silent reader.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from device.idcard.codec import (
    Command,
    build_read_reply,
    build_reply,
    scan_frame,
)
from device.idcard.errors import SW3_FIND_OK, SW3_OK
from device.idcard.identity import Identity
from hardware_sim.serial_pty import SerialEmulator, wire_time

log = logging.getLogger(__name__)

SW3_BAD_CHECKSUM = 0x10
SW3_BAD_COMMAND = 0x21
SW3_READ_FAILED = 0x41
SW3_FIND_FAILED = 0x80
SW3_SELECT_FAILED = 0x81
DEFAULT_SAM_ID = bytes.fromhex("05010000201711230000000012345678")
DEFAULT_GARBAGE = bytes.fromhex("00FF13AA AA 96 0D0A55")

FaultKind = Literal["fail", "corrupt", "truncate", "garbage", "noise", "silence", "lift"]


@dataclass
class Fault:
    """One queued fault: applies to the next ``times`` requests of ``command`` (None: any)."""

    kind: FaultKind
    command: Command | None
    times: int = 1
    sw3: int = 0
    keep: int | None = None
    garbage: bytes = DEFAULT_GARBAGE


class SamEmulator(SerialEmulator):
    """A SAM reader module behind a pty; see the module docstring for the world API."""

    def __init__(
        self,
        baudrate: int = 115200,
        link: str | Path | None = None,
        pace: bool = True,
        *,
        refind_after_read: bool = False,
        sam_id: bytes = DEFAULT_SAM_ID,
        reply_delay_s: float = 0.0,
    ) -> None:
        super().__init__(baudrate, link, pace)
        self.refind_after_read = refind_after_read
        self.sam_id = sam_id
        self.reply_delay_s = reply_delay_s
        """Extra seconds before every reply (a slow reader)."""
        self.silent = False
        """When True the reader answers nothing at all (a stalled module)."""
        self._state = threading.Lock()
        self._card: Identity | None = None
        self._read_done = False
        self._faults: list[Fault] = []
        self._rx = bytearray()
        self._commands: list[str] = []

    def start(self) -> SamEmulator:
        super().start()
        return self

    def __enter__(self) -> SamEmulator:
        return self.start()

    # -- the world ---------------------------------------------------------------------------------
    def insert(self, card: Identity) -> None:
        """Put ``card`` on the reader (replacing any card there)."""
        with self._state:
            self._card = card
            self._read_done = False
        log.debug("card placed on the simulated reader: %s", card.masked())

    def lift(self) -> None:
        """Take the card off the reader."""
        with self._state:
            self._card = None
            self._read_done = False

    @property
    def card(self) -> Identity | None:
        with self._state:
            return self._card

    @property
    def commands(self) -> list[str]:
        """Labels of every request received, in order (``find_card``, ``unknown``...)."""
        with self._state:
            return list(self._commands)

    # -- faults ------------------------------------------------------------------------------------
    def fail_next(self, command: Command | None, sw3: int, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``command`` with failure status ``sw3``."""
        self._queue(Fault("fail", command, times, sw3=sw3))

    def corrupt_next(self, command: Command | None = None, times: int = 1) -> None:
        """Send the next replies with a wrong checksum."""
        self._queue(Fault("corrupt", command, times))

    def truncate_next(
        self, command: Command | None = None, keep: int | None = None, times: int = 1
    ) -> None:
        """Send only the first ``keep`` bytes (default half) of the next replies."""
        self._queue(Fault("truncate", command, times, keep=keep))

    def garbage_before_next(
        self, command: Command | None = None, garbage: bytes = DEFAULT_GARBAGE, times: int = 1
    ) -> None:
        """Send ``garbage`` just before the next replies (line noise, a reader waking up)."""
        self._queue(Fault("garbage", command, times, garbage=garbage))

    def noise_instead_of_next(
        self, command: Command | None = None, garbage: bytes = DEFAULT_GARBAGE, times: int = 1
    ) -> None:
        """Send only ``garbage`` instead of the next replies (a reader at the wrong baud rate)."""
        self._queue(Fault("noise", command, times, garbage=garbage))

    def silence_next(self, command: Command | None = None, times: int = 1) -> None:
        """Do not answer the next requests."""
        self._queue(Fault("silence", command, times))

    def lift_during_next_read(self, keep: int | None = None) -> None:
        """The card is lifted while the next read reply is on the wire: the host gets ``keep`` bytes
        (default half), then nothing more, and the card is gone."""
        self._queue(Fault("lift", None, 1, keep=keep))

    def clear_faults(self) -> None:
        with self._state:
            self._faults.clear()

    def _queue(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("a fault must apply at least once")
        with self._state:
            self._faults.append(fault)

    def _take_fault(self, command: Command | None) -> Fault | None:
        is_read = command in (Command.READ_TEXT_PHOTO, Command.READ_TEXT_PHOTO_FINGERPRINT)
        with self._state:
            for fault in self._faults:
                if fault.kind == "lift" and not is_read:
                    continue
                if fault.command is None or fault.command is command:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- protocol ----------------------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        if self.pace:
            # A pty delivers the host's bytes at once; a real line takes their wire time.
            time.sleep(wire_time(len(data), self.baudrate))
        self._rx += data
        while True:
            scan = scan_frame(bytes(self._rx))
            if scan.status == "incomplete":
                del self._rx[: scan.start]
                return
            del self._rx[: scan.end]
            if scan.status == "corrupt":
                # What a SAM does with a damaged request: say so (SW3 10).
                with self._state:
                    self._commands.append("corrupt")
                if not self.silent:
                    self.send(build_reply(SW3_BAD_CHECKSUM))
                continue
            self._handle(Command.from_body(scan.body))

    def _handle(self, command: Command | None) -> None:
        with self._state:
            self._commands.append(command.label if command else "unknown")
        if self.silent:
            return
        fault = self._take_fault(command)
        if fault is not None and fault.kind == "silence":
            return
        if fault is not None and fault.kind == "fail":
            reply = build_reply(fault.sw3)
        else:
            reply = self._answer(command)
        if self.reply_delay_s > 0:
            time.sleep(self.reply_delay_s)
        self._send_with_fault(reply, fault)

    def _answer(self, command: Command | None) -> bytes:
        if command is None:
            return build_reply(SW3_BAD_COMMAND)
        if command is Command.SAM_ID:
            return build_reply(SW3_OK, self.sam_id)
        if command in (Command.RESET_SAM, Command.SAM_STATUS):
            return build_reply(SW3_OK)
        return self._card_answer(command)

    def _card_answer(self, command: Command) -> bytes:
        with self._state:
            card = self._card
            if command is Command.FIND_CARD:
                found = card is not None and (self.refind_after_read or not self._read_done)
                return build_reply(SW3_FIND_OK, bytes(4)) if found else build_reply(SW3_FIND_FAILED)
            if command is Command.SELECT_CARD:
                return build_reply(SW3_OK, bytes(8)) if card else build_reply(SW3_SELECT_FAILED)
            if card is None:
                return build_reply(SW3_READ_FAILED)
            self._read_done = True
        return build_read_reply(card, command is Command.READ_TEXT_PHOTO_FINGERPRINT)

    def _send_with_fault(self, reply: bytes, fault: Fault | None) -> None:
        if fault is None or fault.kind == "fail":
            self.send(reply)
        elif fault.kind == "corrupt":
            self.send(reply[:-1] + bytes([reply[-1] ^ 0x5A]))
        elif fault.kind == "garbage":
            self.send(fault.garbage + reply)
        elif fault.kind == "noise":
            self.send(fault.garbage)
        elif fault.kind == "truncate":
            self.send(reply[: fault.keep if fault.keep is not None else len(reply) // 2])
        elif fault.kind == "lift":
            self.send(reply[: fault.keep if fault.keep is not None else len(reply) // 2])
            self.lift()
