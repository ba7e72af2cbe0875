"""The receipt printer: python-escpos transports carry the bytes, a status check guards each
receipt, and a durable spool makes sure no receipt is lost.

Sequence per receipt: spool it; open the link; ``DLE EOT 1, 2, 4`` (and 3 on error); send the
whole receipt; ask ``DLE EOT 1`` again. That last answer can only come after the printer has taken
every byte before it (the link is in order), so it doubles as the receipt's acknowledgement; only
then is the spool file removed. A printer that vanishes mid-receipt therefore keeps the receipt in
the spool and it is printed again *whole* later (the partial copy is not resumed). Spool files are
sealed with the device key; one that does not decrypt is quarantined and skipped, never printed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from device.atrest import AtRestError, DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.config import ReceiptPrinterSection
from device.errors import DeviceClosedError, ProtocolError
from device.escpos import status as st
from device.escpos.errors import (
    PaperNearEndWarning,
    PrinterError,
    PrinterOfflineError,
    PrinterUnavailableError,
)
from device.escpos.receipt import Receipt, build_receipt
from device.escpos.spool import ReceiptSpool

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class PrintResult:
    """What happened to the receipts sent in one go."""

    printed: list[Path] = field(default_factory=list)
    warnings: list[PaperNearEndWarning] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    """Spool files skipped because they did not decrypt (moved to ``quarantine/``)."""


def _open_escpos(config: ReceiptPrinterSection) -> Any:
    """A connected python-escpos printer for the configured backend."""
    from escpos import printer as ep

    try:
        if config.backend == "network":
            p = ep.Network(config.host, port=config.tcp_port, timeout=config.timeout_s,
                           profile=config.profile)  # fmt: skip
        elif config.backend == "serial":
            p = ep.Serial(config.port, baudrate=config.baudrate, timeout=config.timeout_s,
                          dsrdtr=False, profile=config.profile)  # fmt: skip
        elif config.backend == "usb":
            p = ep.Usb(config.usb_vendor_id, config.usb_product_id,
                       timeout=int(config.timeout_s * 1000), profile=config.profile)  # fmt: skip
        else:
            raise PrinterUnavailableError("receipt.backend is 'none'")
        p.open()
        if config.backend == "network":
            # Each status query is a few bytes answered before the next is sent: with Nagle on,
            # the query after a receipt waits for the peer's delayed ACK (~40 ms on Linux).
            p.device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except PrinterError:
        raise
    except RuntimeError as err:  # python-escpos: optional dependency (pyusb) missing
        raise PrinterUnavailableError(str(err)) from err
    except Exception as err:  # escpos DeviceNotFoundError, OSError, serial errors
        raise PrinterUnavailableError(f"{_where(config)}: {err}") from err
    return p


def _where(config: ReceiptPrinterSection) -> str:
    if config.backend == "network":
        return f"{config.host}:{config.tcp_port}"
    if config.backend == "serial":
        return config.port
    return f"usb {config.usb_vendor_id:04x}:{config.usb_product_id:04x}"


class ReceiptPrinter:
    """Prints :class:`Receipt` objects; every receipt goes through the (sealed) spool first."""

    def __init__(
        self,
        config: ReceiptPrinterSection,
        spool_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        *,
        key: DeviceKey,
    ) -> None:
        self.config = config
        self.spool = ReceiptSpool(spool_dir, clock, key=key)
        self._clock = clock
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ReceiptPrinter:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError("ReceiptPrinter used after close()")

    # -- API -------------------------------------------------------------------------------------
    def print_receipt(self, receipt: Receipt) -> PrintResult:
        """Spool ``receipt`` and print everything pending (older receipts first).

        Raises a :class:`PrinterError` subclass when the printer cannot print; the receipt then
        stays in the spool and :meth:`print_pending` prints it later.
        """
        self._check_open()
        self.spool.put(build_receipt(receipt, self.config.profile))
        return self.print_pending()

    def pending(self) -> list[Path]:
        return self.spool.pending()

    def print_pending(self) -> PrintResult:
        """Print every spooled receipt, oldest first; stop at the first problem and raise it."""
        self._check_open()
        result = PrintResult()
        jobs = self.spool.pending()
        if not jobs:
            return result
        p = _open_escpos(self.config)
        try:
            for job in jobs:
                try:
                    data = self.spool.read(job)
                except AtRestError:
                    result.quarantined.append(job)  # logged by the spool; never print garbage
                    continue
                result.warnings = st.warnings_of(self._ready(p))
                self._send(p, data)
                self._acknowledged(p)
                self.spool.done(job)
                result.printed.append(job)
                log.info(
                    "receipt %s printed (%d still spooled)",
                    job.name,
                    len(jobs) - len(result.printed) - len(result.quarantined),
                )
        finally:
            self._close_quietly(p)
        return result

    def status(self) -> st.StatusReport:
        """Ask the printer for its state now."""
        self._check_open()
        p = _open_escpos(self.config)
        try:
            return self._report(p)
        finally:
            self._close_quietly(p)

    def wait_and_print(self, timeout_s: float, interval_s: float = 2.0) -> PrintResult:
        """Retry :meth:`print_pending` until the spool is empty or ``timeout_s`` has passed."""
        deadline = self._clock.monotonic() + timeout_s
        while True:
            try:
                return self.print_pending()
            except PrinterError:
                if self._clock.monotonic() + interval_s > deadline:
                    raise
                self._clock.sleep(interval_s)

    # -- wire ------------------------------------------------------------------------------------
    def _ready(self, p: Any) -> st.StatusReport:
        report = self._report(p)
        issue = st.problem(report)
        if issue is not None:
            log.warning("receipt printer not ready: %s", type(issue).__name__)
            raise issue
        return report

    def _report(self, p: Any) -> st.StatusReport:
        printer = self._parse(st.PrinterStatus.parse, self._query(p, st.StatusKind.PRINTER))
        offline = self._parse(st.OfflineCause.parse, self._query(p, st.StatusKind.OFFLINE_CAUSE))
        paper = self._parse(st.PaperStatus.parse, self._query(p, st.StatusKind.PAPER))
        error = None
        if offline.error:
            error = self._parse(st.ErrorCause.parse, self._query(p, st.StatusKind.ERROR_CAUSE))
        return st.StatusReport(printer, offline, paper, error)

    @staticmethod
    def _parse(parse: Callable[[int], T], byte: int) -> T:
        """A reply that is not a status byte means we cannot trust the printer: offline."""
        try:
            return parse(byte)
        except ProtocolError as err:
            raise PrinterOfflineError(str(err)) from err

    def _query(self, p: Any, kind: st.StatusKind) -> int:
        """One ``DLE EOT n`` round trip through python-escpos's device handle."""
        self._send(p, st.query(kind))
        try:
            if self.config.backend == "network":
                reply = p.device.recv(1)
            elif self.config.backend == "serial":
                # python-escpos's _read() asks for 16 bytes and so always waits the full timeout.
                reply = p.device.read(1)
            else:
                reply = bytes(p._read())[:1]
        except TimeoutError as err:
            raise PrinterOfflineError(f"no status reply within {self.config.timeout_s} s") from err
        except Exception as err:  # socket, serial and usb errors alike
            raise PrinterUnavailableError(f"{_where(self.config)}: {err}") from err
        if not reply:
            raise PrinterUnavailableError(f"{_where(self.config)}: no status reply (link closed?)")
        return int(reply[0])

    def _send(self, p: Any, data: bytes) -> None:
        try:
            p._raw(data)
        except Exception as err:  # socket, serial and usb errors alike
            raise PrinterUnavailableError(f"{_where(self.config)}: {err}") from err

    def _acknowledged(self, p: Any) -> None:
        after = self._parse(st.PrinterStatus.parse, self._query(p, st.StatusKind.PRINTER))
        if after.offline:
            # Went offline during the receipt (paper ran out, cover opened): reprint it whole.
            self._ready(p)  # raises the precise cause
            raise PrinterOfflineError("went offline during the receipt")

    @staticmethod
    def _close_quietly(p: Any) -> None:
        try:
            p.close()
        except Exception as err:  # noqa: BLE001  # the link may already be gone; nothing to save
            log.debug("closing receipt printer link: %s", err)
            # python-escpos's Serial.close() drains first and fails on a dead port before it
            # forgets the handle; close the handle ourselves so __del__ does not try again.
            with contextlib.suppress(Exception):
                p._device.close()
            p._device = False
