"""A4 printing through a real cupsd: output, stopped queue, paper-out, stuck jobs, sealed spool."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from device.a4 import (
    A4Printer,
    A4PrinterError,
    CupsUnavailableError,
    JobFailedError,
    JobTimeoutError,
    PaperOutError,
    QueueNotFoundError,
    QueueStoppedError,
)
from device.atrest import DeviceKey
from device.config import A4PrinterSection
from hardware_sim.cups import CupsTestServer, SimQueue

from .conftest import NAME


def _check_printed(path: Path) -> None:
    reader = PdfReader(io.BytesIO(path.read_bytes()))
    assert len(reader.pages) == 2
    assert NAME in reader.pages[0].extract_text()


def test_prints_two_pages_with_the_name(
    printer: A4Printer, queue: SimQueue, two_page_pdf: bytes
) -> None:
    key = printer.submit(two_page_pdf, "居住证明")
    (out,) = queue.wait_for_output(1)
    _check_printed(out)
    assert printer.pending() == []
    assert key
    accepting, state, _ = printer.queue_status()
    assert accepting and state in ("idle", "processing")


def test_stopped_queue_keeps_job_and_retry_prints_once(
    printer: A4Printer, queue: SimQueue, cupsd: CupsTestServer, two_page_pdf: bytes
) -> None:
    cupsd.disable(queue.name, "maintenance")
    with pytest.raises(QueueStoppedError, match="maintenance") as caught:
        printer.submit(two_page_pdf, "t")
    assert [e.key for e in printer.pending()] == [caught.value.key]
    assert printer.queue_status()[1] == "stopped"
    cupsd.enable(queue.name)
    printer.retry(str(caught.value.key))
    _check_printed(queue.wait_for_output(1)[0])
    assert printer.pending() == []
    assert len(queue.outputs()) == 1  # the held CUPS job was followed, not printed twice


def test_paper_out_then_retry(printer: A4Printer, queue: SimQueue, two_page_pdf: bytes) -> None:
    queue.set_mode("paper-out")
    with pytest.raises(PaperOutError) as caught:
        printer.submit(two_page_pdf, "t")
    (kept,) = printer.pending()
    assert kept.attempts == 1 and "PaperOutError" in (kept.last_error or "")
    queue.set_mode("ok")
    printer.enable_queue()
    printer.retry(str(caught.value.key))
    _check_printed(queue.wait_for_output(1)[0])
    assert printer.pending() == []


def test_stuck_job_times_out_and_is_kept(
    cupsd: CupsTestServer, queue: SimQueue, tmp_path: Path, two_page_pdf: bytes
) -> None:
    queue.set_mode("hang")
    section = A4PrinterSection(queue=queue.name, job_timeout_s=1.0, poll_interval_s=0.05)
    printer = A4Printer(section, tmp_path / "spool", server=cupsd.socket, key=DeviceKey.generate())
    with pytest.raises(JobTimeoutError, match="processing") as caught:
        printer.submit(two_page_pdf, "t")
    assert [e.key for e in printer.pending()] == [caught.value.key]
    queue.set_mode("ok")
    printer.retry(str(caught.value.key))
    _check_printed(queue.wait_for_output(1)[0])


def test_failing_printer_job_failed(
    cupsd: CupsTestServer, queue: SimQueue, printer: A4Printer, two_page_pdf: bytes
) -> None:
    queue.set_mode("fail")
    with pytest.raises(JobFailedError, match="held") as caught:
        printer.submit(two_page_pdf, "t")
    assert len(printer.pending()) == 1
    queue.set_mode("ok")
    printer.enable_queue()
    printer.retry(str(caught.value.key))
    _check_printed(queue.wait_for_output(1)[0])


def test_cupsd_down_keeps_job(
    cupsd: CupsTestServer, queue: SimQueue, printer: A4Printer, two_page_pdf: bytes
) -> None:
    cupsd.stop()
    try:
        with pytest.raises(CupsUnavailableError) as caught:
            printer.submit(two_page_pdf, "t")
    finally:
        cupsd.start()
    printer.retry(str(caught.value.key))
    _check_printed(queue.wait_for_output(1)[0])


def test_unknown_queue(cupsd: CupsTestServer, tmp_path: Path, two_page_pdf: bytes) -> None:
    section = A4PrinterSection(queue="no-such-queue", job_timeout_s=1)
    printer = A4Printer(section, tmp_path, server=cupsd.socket, key=DeviceKey.generate())
    with pytest.raises(QueueNotFoundError, match="no-such-queue"):
        printer.submit(two_page_pdf, "t")
    assert len(printer.pending()) == 1


def test_spool_survives_restart(
    cupsd: CupsTestServer, queue: SimQueue, printer: A4Printer, two_page_pdf: bytes
) -> None:
    cupsd.disable(queue.name)
    with pytest.raises(QueueStoppedError):
        printer.submit(two_page_pdf, "居住证明")
    again = A4Printer(
        printer.config, printer.spool.directory, server=cupsd.socket, key=printer.spool.key
    )
    (kept,) = again.pending()
    assert kept.title == "居住证明"
    cupsd.enable(queue.name)
    again.retry(kept.key)
    assert again.pending() == []
    _check_printed(queue.wait_for_output(1)[0])


def test_aborted_job_is_job_failed(
    cupsd: CupsTestServer, queue: SimQueue, printer: A4Printer, two_page_pdf: bytes
) -> None:
    import subprocess

    subprocess.run(
        ["lpadmin", "-h", cupsd.socket, "-p", queue.name, "-o", "printer-error-policy=abort-job"],
        check=True,
    )
    queue.set_mode("fail")
    with pytest.raises(JobFailedError, match="aborted"):
        printer.submit(two_page_pdf, "t")
    assert len(printer.pending()) == 1


def test_through_cups_pdf(cupsd: CupsTestServer, tmp_path: Path, two_page_pdf: bytes) -> None:
    """The real printer-driver-cups-pdf queue: the PDF that comes out has both pages."""
    pdf_queue = cupsd.add_pdf_queue("cupspdf")
    section = A4PrinterSection(queue="cupspdf", job_timeout_s=20, poll_interval_s=0.05)
    printer = A4Printer(section, tmp_path, server=cupsd.socket, key=DeviceKey.generate())
    printer.submit(two_page_pdf, "certificate")
    (out,) = pdf_queue.wait_for_output(1)
    reader = PdfReader(io.BytesIO(out.read_bytes()))
    assert len(reader.pages) == 2
    # The PostScript + Ghostscript round trip drops the CJK ToUnicode map; ASCII text survives.
    assert "2" in reader.pages[1].extract_text()
    assert printer.pending() == []


def _spool_bytes(printer: A4Printer) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in printer.spool.directory.rglob("*") if p.is_file()]


def test_kept_job_is_sealed_and_cups_sees_a_neutral_title(
    printer: A4Printer, queue: SimQueue, cupsd: CupsTestServer, two_page_pdf: bytes
) -> None:
    cupsd.disable(queue.name, "maintenance")
    title = f"居住证明 {NAME}"
    key = printer.hand_over(two_page_pdf, title)  # CUPS accepted it into the stopped queue
    with pytest.raises(QueueStoppedError):
        printer.follow(key)
    files = _spool_bytes(printer)
    assert files, "the job must be kept"
    secrets = [NAME.encode("utf-8"), NAME.encode("utf-16-be"), title.encode("utf-8")]
    secrets += [two_page_pdf[i : i + 64] for i in range(0, len(two_page_pdf), 4096)]
    for name, data in files:
        assert NAME not in name
        for secret in secrets:
            assert secret not in data, name
    (kept,) = printer.pending()
    assert kept.title == title and kept.key == key
    # cupsd hides job-name over IPP; its control file (written on shutdown) has what it was sent.
    cupsd.stop()
    try:
        control = (cupsd.root / "spool" / f"c{kept.cups_job_id:05d}").read_bytes()
    finally:
        cupsd.start()
    assert f"linli-{key[:8]}".encode() in control
    assert NAME.encode() not in control and title.encode() not in control

    cupsd.enable(queue.name)
    printer.retry(key)
    _check_printed(queue.wait_for_output(1)[0])
    assert printer.pending() == [] and _spool_bytes(printer) == []
    assert len(queue.outputs()) == 1  # the CUPS job from hand_over, not a second copy


def test_hand_over_returns_before_the_page_and_follow_finishes(
    printer: A4Printer, queue: SimQueue, two_page_pdf: bytes
) -> None:
    key = printer.hand_over(two_page_pdf, "居住证明")
    assert [e.key for e in printer.pending()] == [key]  # kept until CUPS says completed
    printer.follow(key)
    _check_printed(queue.wait_for_output(1)[0])
    assert printer.pending() == []
    with pytest.raises(KeyError):
        printer.follow(key)


def test_follow_a_job_cups_never_accepted(
    printer: A4Printer, cupsd: CupsTestServer, queue: SimQueue, two_page_pdf: bytes
) -> None:
    cupsd.stop()
    try:
        with pytest.raises(CupsUnavailableError) as caught:
            printer.hand_over(two_page_pdf, "t")
    finally:
        cupsd.start()
    key = str(caught.value.key)
    with pytest.raises(A4PrinterError, match="never accepted by CUPS") as followed:
        printer.follow(key)
    assert followed.value.key == key
    printer.retry(key)
    _check_printed(queue.wait_for_output(1)[0])


def test_a_spool_from_another_key_is_quarantined_not_printed(
    printer: A4Printer, queue: SimQueue, cupsd: CupsTestServer, two_page_pdf: bytes
) -> None:
    cupsd.disable(queue.name)
    with pytest.raises(QueueStoppedError):
        printer.submit(two_page_pdf, "t")
    stranger = A4Printer(
        printer.config, printer.spool.directory, server=cupsd.socket, key=DeviceKey.generate()
    )
    assert stranger.pending() == []
    assert len(list((printer.spool.directory / "quarantine").iterdir())) == 2
