"""A virtual Linli card plugged into pcscd through vsmartcard's vpcd driver; pyscard runs unchanged.

The vpcd driver (``/etc/reader.conf.d/vpcd``) listens on TCP 35963 (slot 0) / 35964 (slot 1); the
card connects to it. Each message is a 2-byte big-endian length + payload; a 1-byte payload is
control (00 power off, 01 power on, 02 reset, 04 get ATR -> the card answers the ATR), anything else
is a C-APDU answered with an R-APDU. pcscd polls presence with 04 about every 0.4 s; a closed
connection is a removed card, so :meth:`VirtualCard.remove` disconnects and ``insert`` connects.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from device.pcsc.apdu import INS_GET_RESPONSE, INS_READ_BINARY, INS_SELECT
from device.pcsc.profile import (
    DEFAULT_AID,
    TAG_DF_NAME,
    TAG_FCI,
    CardRecord,
    encode_record,
    encode_tlv,
)
from hardware_sim.transcript import Transcript, TranscriptEntry

log = logging.getLogger(__name__)

VPCD_PORT_SLOT0 = 35963
VPCD_PORT_SLOT1 = 35964
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
# pcscd records the card as present just after it has read the ATR that follows power-on.
_SETTLE_S = 0.05


def _with_tck(atr_without_tck: bytes) -> bytes:
    tck = 0
    for b in atr_without_tck[1:]:
        tck ^= b
    return atr_without_tck + bytes((tck,))


# Direct convention, T=1 offered (TD1=80, TD2=01), historical bytes "LINLI".
DEFAULT_ATR = _with_tck(bytes.fromhex("3B858001") + b"LINLI")


class _CardPulledError(Exception):
    """Internal: a ``remove`` fault fired; the connection is dropped without an answer."""


@dataclass
class Fault:
    """A misbehaviour armed on the card: for commands with ``ins`` (None = any), ``times`` times."""

    action: Literal["status", "remove", "delay"]
    ins: int | None = None
    sw: int = 0x6F00
    delay_s: float = 0.0
    times: int = 1


def _sw(value: int) -> bytes:
    return value.to_bytes(2, "big")


@dataclass
class CardApplet:
    """The card side of the profile, pure: ``process(c_apdu) -> r_apdu``.

    ``t0_style`` makes SELECT answer 61xx so the reader must send GET RESPONSE (as T=0 cards do);
    ``strict_le`` makes READ BINARY answer 6Cxx when Le asks for more than the file holds (else the
    short data with 6282). ``file_bytes`` overrides the EF content (to serve a corrupt record).
    """

    record: CardRecord | None = None
    aid: bytes = DEFAULT_AID
    file_bytes: bytes | None = None
    t0_style: bool = True
    strict_le: bool = True
    selected: bool = False
    _pending: bytes = field(default=b"", repr=False)

    @property
    def ef(self) -> bytes:
        if self.file_bytes is not None:
            return self.file_bytes
        return encode_record(self.record) if self.record is not None else b""

    def reset(self) -> None:
        self.selected = False
        self._pending = b""

    def process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return _sw(0x6700)
        cla, ins = apdu[0], apdu[1]
        if cla != 0x00:
            return _sw(0x6E00)
        if ins == INS_GET_RESPONSE:
            return self._get_response(apdu)
        self._pending = b""
        if ins == INS_SELECT:
            return self._select(apdu)
        if ins == INS_READ_BINARY:
            return self._read_binary(apdu)
        return _sw(0x6D00)

    def _select(self, apdu: bytes) -> bytes:
        if apdu[2:4] != b"\x04\x00":
            return _sw(0x6A86)
        if len(apdu) < 5 or len(apdu) not in (5 + apdu[4], 6 + apdu[4]):
            return _sw(0x6700)
        name = apdu[5 : 5 + apdu[4]]
        if not name or not self.aid.startswith(name):
            self.selected = False
            return _sw(0x6A82)
        self.selected = True
        fci = encode_tlv(TAG_FCI, encode_tlv(TAG_DF_NAME, self.aid))
        if self.t0_style:
            self._pending = fci
            return _sw(0x6100 | len(fci))
        return fci + _sw(0x9000)

    def _get_response(self, apdu: bytes) -> bytes:
        if not self._pending:
            return _sw(0x6985)
        if len(apdu) != 5:
            return _sw(0x6700)
        le = apdu[4] or 256
        if le > len(self._pending):
            return _sw(0x6C00 | len(self._pending))
        out, self._pending = self._pending[:le], self._pending[le:]
        if self._pending:
            return out + _sw(0x6100 | (len(self._pending) & 0xFF))  # 00 means 256 or more
        return out + _sw(0x9000)

    def _read_binary(self, apdu: bytes) -> bytes:  # noqa: PLR0911 - one return per status word
        if not self.selected:
            return _sw(0x6986)
        if len(apdu) != 5:
            return _sw(0x6700)
        if apdu[2] & 0x80:
            return _sw(0x6A81)  # short-EF addressing is not part of the profile
        offset, le = (apdu[2] << 8) | apdu[3], apdu[4] or 256
        ef = self.ef
        if offset >= len(ef):
            return _sw(0x6B00)
        available = len(ef) - offset
        if le > available:
            if self.strict_le:
                return _sw(0x6C00 | available & 0xFF)
            return ef[offset:] + _sw(0x6282)
        return ef[offset : offset + le] + _sw(0x9000)


class VirtualCard:
    """A card for the vpcd reader: world API :meth:`insert`, :meth:`remove` and armed faults.

    One thread keeps the TCP connection while the card is inserted (reconnecting every
    ``reconnect_s`` when pcscd is down or restarts) and answers control bytes and APDUs.
    """

    def __init__(
        self,
        record: CardRecord | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT_SLOT0,
        atr: bytes = DEFAULT_ATR,
        applet: CardApplet | None = None,
        reconnect_s: float = 0.2,
    ) -> None:
        self.host, self.port, self.atr, self.reconnect_s = host, port, atr, reconnect_s
        self.applet = applet or CardApplet(record=record)
        self._faults: list[Fault] = []
        self._transcript = Transcript()
        self._lock = threading.Lock()
        self._want_inserted = False
        self._connected = threading.Event()
        # Set once pcscd powered the card and read its ATR: from then on pcscd shows it present.
        self._polled = threading.Event()
        self._powered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> VirtualCard:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"vpcd-{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Disconnect and stop the thread; safe twice."""
        self._want_inserted = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> VirtualCard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- world API -------------------------------------------------------------------------------
    @property
    def inserted(self) -> bool:
        return self._want_inserted

    @property
    def connected(self) -> bool:
        """True while a vpcd connection is open (pcscd may take up to ~0.4 s more to notice)."""
        return self._connected.is_set()

    def insert(
        self,
        record: CardRecord | None = None,
        *,
        file_bytes: bytes | None = None,
        wait_s: float = 5,
    ) -> None:
        """Put the card (optionally with new data) on the reader; wait until pcscd shows it.

        Inserting a card that is already in takes it out first, as a person swapping cards would.
        """
        if self._want_inserted:
            self.remove()
        with self._lock:
            if record is not None:
                self.applet.record = record
            self.applet.file_bytes = file_bytes
            self.applet.reset()
            self._polled.clear()
            self._want_inserted = True
        self.start()
        if wait_s and not self._polled.wait(wait_s):
            log.warning("pcscd on %s:%s has not powered the card within %.1f s", *self.addr, wait_s)
        elif wait_s:
            time.sleep(_SETTLE_S)

    def remove(self, wait_s: float = 2) -> None:
        """Take the card off the reader: the vpcd connection is closed."""
        self._want_inserted = False
        deadline = time.monotonic() + wait_s
        while self._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def fail(self, ins: int | None, sw: int, times: int = 1) -> None:
        """Answer the next ``times`` commands with ``ins`` (None = any) with status word ``sw``."""
        self._arm(Fault("status", ins=ins, sw=sw, times=times))

    def remove_during(self, ins: int | None) -> None:
        """Card pulled mid-exchange: the next command with ``ins`` is read but never answered."""
        self._arm(Fault("remove", ins=ins))

    def slow(self, delay_s: float, ins: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` commands with ``ins`` only after ``delay_s`` seconds."""
        self._arm(Fault("delay", ins=ins, delay_s=delay_s, times=times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def transcript(self) -> list[TranscriptEntry]:
        """APDUs exchanged: ``rx`` C-APDUs from the reader, ``tx`` R-APDUs from the card."""
        return self._transcript.entries

    def clear_transcript(self) -> None:
        self._transcript.clear()

    def transcript_text(self) -> str:
        """Golden format: ``> 00 A4 ...`` for C-APDUs, ``< 90 00`` for R-APDUs, one per line."""
        return self._transcript.text()

    # -- internals -------------------------------------------------------------------------------
    def _arm(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, ins: int) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.ins is None or fault.ins == ins:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._want_inserted:
                self._stop.wait(0.02)
                continue
            try:
                sock = socket.create_connection(self.addr, timeout=1.0)
            except OSError as err:
                log.debug("vpcd %s:%s not reachable (%s); retrying", *self.addr, err)
                self._stop.wait(self.reconnect_s)
                continue
            self._powered = False
            self._connected.set()
            log.info("virtual card connected to vpcd %s:%s", *self.addr)
            try:
                self._serve(sock)
            except (OSError, EOFError) as err:
                log.info("vpcd connection %s:%s ended: %s", *self.addr, err)
                self._stop.wait(self.reconnect_s)
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
                self._connected.clear()
                with self._lock:
                    self.applet.reset()

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        """``n`` bytes, or None when the card was removed or closed meanwhile."""
        buf = b""
        while len(buf) < n:
            if self._stop.is_set() or not self._want_inserted:
                return None
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError("vpcd closed the connection (pcscd stopped?)")
            buf += chunk
        return buf

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.05)
        while True:
            head = self._recv_exact(sock, 2)
            if head is None:
                return
            (size,) = struct.unpack(">H", head)
            payload = self._recv_exact(sock, size) if size else b""
            if payload is None:
                return
            try:
                answer = self._answer(payload)
            except _CardPulledError:
                return
            if answer is None:
                continue
            sock.sendall(struct.pack(">H", len(answer)) + answer)

    def _answer(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            if payload[0] == CTRL_ATR:
                if self._powered:
                    self._polled.set()
                return self.atr
            if payload[0] == CTRL_ON:
                self._powered = True
            if payload[0] in (CTRL_OFF, CTRL_RESET):
                with self._lock:
                    self.applet.reset()
            return None
        self._transcript.record("rx", payload)
        fault = self._take_fault(payload[1]) if len(payload) > 1 else None
        if fault is not None and fault.action == "remove":
            log.info("virtual card pulled during INS %02X", payload[1])
            self._want_inserted = False
            raise _CardPulledError
        if fault is not None and fault.action == "delay":
            time.sleep(fault.delay_s)
        if fault is not None and fault.action == "status":
            answer = _sw(fault.sw)
        else:
            with self._lock:
                answer = self.applet.process(payload)
        self._transcript.record("tx", answer)
        return answer
