"""ReceiptPrinter through python-escpos's real transports against the emulator (TCP and pty)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyzbar.pyzbar import decode

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.config import ReceiptPrinterSection
from device.errors import DeviceClosedError
from device.escpos.errors import (
    CoverOpenError,
    PaperOutError,
    PrinterError,
    PrinterOfflineError,
    PrinterUnavailableError,
)
from device.escpos.printer import ReceiptPrinter
from device.escpos.receipt import Receipt
from hardware_sim.escpos.server import EscposPrinterModel, EscposPtyPrinter, EscposTcpPrinter

RECEIPT = Receipt(
    title="居住证明回执", lines=["No. 2026-0007", "姓名: 王*"], qr="LQ1:xyz", footer="谢谢"
)


class Rig:
    """One emulated printer (model + how to drop its link) and a driver talking to it."""

    def __init__(self, model: EscposPrinterModel, printer: ReceiptPrinter) -> None:
        self.model = model
        self.printer = printer


@pytest.fixture(params=["network", "serial"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    spool = tmp_path / "spool" / "receipt"
    if request.param == "network":
        with EscposTcpPrinter(port=0) as tcp:
            section = ReceiptPrinterSection(backend="network", tcp_port=tcp.port, timeout_s=2)
            yield Rig(tcp, ReceiptPrinter(section, spool, FakeClock(), key=DeviceKey.generate()))
    else:
        with EscposPtyPrinter(link=tmp_path / "receipt-tty") as pty:
            section = ReceiptPrinterSection(
                backend="serial", port=str(tmp_path / "receipt-tty"), timeout_s=2
            )
            rig = Rig(
                pty.model, ReceiptPrinter(section, spool, FakeClock(), key=DeviceKey.generate())
            )
            rig.pty = pty  # type: ignore[attr-defined]
            yield rig


def _printed_receipt(model: EscposPrinterModel, index: int = -1) -> list[str]:
    pages = model.cut_pages
    assert pages, "nothing was cut"
    page = pages[index]
    assert [c.data for c in decode(model.pages[len(pages) - 1 if index == -1 else index])] == [
        b"LQ1:xyz"
    ]
    return page.lines


def test_prints_and_empties_the_spool(rig: Rig) -> None:
    result = rig.printer.print_receipt(RECEIPT)
    assert len(result.printed) == 1 and not result.warnings
    assert rig.printer.pending() == []
    lines = _printed_receipt(rig.model)
    assert lines[:3] == ["居住证明回执", "No. 2026-0007", "姓名: 王*"]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("paper_out", PaperOutError),
        ("cover_open", CoverOpenError),
        ("offline", PrinterOfflineError),
    ],
)
def test_fault_keeps_the_receipt_until_cleared(
    rig: Rig, fault: str, error: type[PrinterError]
) -> None:
    getattr(rig.model, fault)()
    with pytest.raises(error) as caught:
        rig.printer.print_receipt(RECEIPT)
    assert "/" in str(caught.value)  # Chinese / English message for the kiosk
    assert len(rig.printer.pending()) == 1
    assert rig.model.cut_pages == []
    rig.model.clear_faults()
    assert len(rig.printer.print_pending().printed) == 1
    assert rig.printer.pending() == []
    assert len(rig.model.cut_pages) == 1
    assert _printed_receipt(rig.model)[0] == "居住证明回执"


def test_near_end_prints_with_a_warning(rig: Rig) -> None:
    rig.model.near_end()
    result = rig.printer.print_receipt(RECEIPT)
    assert [type(w).__name__ for w in result.warnings] == ["PaperNearEndWarning"]
    assert rig.printer.pending() == [] and len(rig.model.cut_pages) == 1


def test_link_dropped_mid_receipt_keeps_and_reprints_it(rig: Rig) -> None:
    rig.model.drop_after(9 + 40)  # the three status queries, then 40 bytes of the receipt
    with pytest.raises(PrinterUnavailableError):
        rig.printer.print_receipt(RECEIPT)
    assert len(rig.printer.pending()) == 1
    assert rig.model.cut_pages == []
    if hasattr(rig, "pty"):
        # The emulator unplugs from its own thread: let it finish removing the link first.
        deadline = time.monotonic() + 2
        while rig.pty.link.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        rig.pty.plug()  # the adapter is plugged back in
    assert len(rig.printer.print_pending().printed) == 1
    assert rig.printer.pending() == []
    assert "谢谢" in _printed_receipt(rig.model)


def test_receipts_spooled_during_a_fault_print_in_order(rig: Rig) -> None:
    rig.model.paper_out()
    for n in range(3):
        receipt = Receipt(title=f"T{n}", lines=[f"line {n}"], qr="LQ1:xyz")
        with pytest.raises(PaperOutError):
            rig.printer.print_receipt(receipt)
    assert len(rig.printer.pending()) == 3
    rig.model.clear_faults()
    assert len(rig.printer.print_pending().printed) == 3
    assert [p.lines[0] for p in rig.model.cut_pages] == ["T0", "T1", "T2"]


def test_garbled_status_is_an_offline_error(rig: Rig) -> None:
    rig.model.faults.garbled_status = True
    with pytest.raises(PrinterOfflineError, match="not a status byte"):
        rig.printer.print_receipt(RECEIPT)
    assert len(rig.printer.pending()) == 1


def test_absent_network_printer_keeps_the_receipt(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    section = ReceiptPrinterSection(backend="network", tcp_port=port, timeout_s=1)
    printer = ReceiptPrinter(section, tmp_path / "spool", FakeClock(), key=DeviceKey.generate())
    with pytest.raises(PrinterUnavailableError, match=f"127.0.0.1:{port}"):
        printer.print_receipt(RECEIPT)
    assert len(printer.pending()) == 1
    with EscposTcpPrinter(port=port) as tcp:  # the printer is switched on
        assert len(printer.print_pending().printed) == 1
        assert tcp.cut_pages[0].lines[0] == "居住证明回执"


def test_absent_serial_printer_keeps_the_receipt(tmp_path: Path) -> None:
    section = ReceiptPrinterSection(backend="serial", port=str(tmp_path / "nothing"), timeout_s=1)
    printer = ReceiptPrinter(section, tmp_path / "spool", FakeClock(), key=DeviceKey.generate())
    with pytest.raises(PrinterUnavailableError, match="nothing"):
        printer.print_receipt(RECEIPT)
    assert len(printer.pending()) == 1


def test_wait_and_print_retries_on_the_clock(tmp_path: Path) -> None:
    with EscposTcpPrinter(port=0) as tcp:
        tcp.paper_out()
        clock = FakeClock()
        section = ReceiptPrinterSection(backend="network", tcp_port=tcp.port, timeout_s=2)
        printer = ReceiptPrinter(section, tmp_path / "spool", clock, key=DeviceKey.generate())
        with pytest.raises(PaperOutError):
            printer.print_receipt(RECEIPT)
        start = clock.monotonic()
        with pytest.raises(PaperOutError):
            printer.wait_and_print(timeout_s=10, interval_s=2)
        assert clock.monotonic() - start == pytest.approx(10, abs=2)
        tcp.clear_faults()
        assert len(printer.wait_and_print(timeout_s=10).printed) == 1


def test_status_and_use_after_close(rig: Rig) -> None:
    rig.model.cover_open()
    report = rig.printer.status()
    assert report.offline.cover_open and not report.ready
    with rig.printer as printer:
        pass
    printer.close()  # safe twice
    with pytest.raises(DeviceClosedError):
        printer.print_pending()


def _spool_files(printer: ReceiptPrinter) -> list[Path]:
    return sorted(p for p in printer.spool.directory.rglob("*") if p.is_file())


def test_spooled_receipt_is_sealed_while_offline(rig: Rig) -> None:
    rig.model.offline()
    with pytest.raises(PrinterOfflineError):
        rig.printer.print_receipt(RECEIPT)
    (kept,) = _spool_files(rig.printer)
    data = kept.read_bytes()
    for text in (RECEIPT.title, *RECEIPT.lines, RECEIPT.footer or ""):
        assert text.encode("gb18030") not in data, text
    assert b"LQ1:xyz" not in data
    assert rig.printer.spool.read(kept).count("居住证明回执".encode("gb18030")) == 1
    rig.model.clear_faults()
    assert len(rig.printer.print_pending().printed) == 1
    assert _printed_receipt(rig.model)[:3] == ["居住证明回执", "No. 2026-0007", "姓名: 王*"]
    assert _spool_files(rig.printer) == []


def test_corrupt_receipt_is_quarantined_and_the_others_print(rig: Rig) -> None:
    rig.model.paper_out()
    for n in range(3):
        with pytest.raises(PaperOutError):
            rig.printer.print_receipt(Receipt(title=f"T{n}", lines=[f"line {n}"], qr="LQ1:xyz"))
    first, broken, last = rig.printer.pending()
    sealed = bytearray(broken.read_bytes())
    sealed[-1] ^= 0xFF  # one damaged byte (the tag)
    broken.write_bytes(bytes(sealed))
    rig.model.clear_faults()
    result = rig.printer.print_pending()
    assert result.printed == [first, last] and result.quarantined == [broken]
    assert [p.lines[0] for p in rig.model.cut_pages] == ["T0", "T2"]
    assert rig.printer.pending() == []
    assert (rig.printer.spool.directory / "quarantine" / broken.name).exists()


def test_network_link_disables_nagle() -> None:
    """Status queries are tiny request/reply exchanges: Nagle would hold each one for the peer's
    delayed ACK after a receipt (~40 ms per receipt on Linux)."""
    from device.escpos.printer import _open_escpos

    with EscposTcpPrinter(port=0) as tcp:
        section = ReceiptPrinterSection(backend="network", tcp_port=tcp.port, timeout_s=2)
        p = _open_escpos(section)
        try:
            assert p.device.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            p.close()
