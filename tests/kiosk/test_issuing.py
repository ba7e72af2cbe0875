"""The kiosk's certificate path end to end on simulated hardware, and what happens when it fails.

Real parts throughout: the SAM driver over a pty, a private real cupsd with a ``linli-sim`` queue
(which passes the PDF through unchanged, so the printed bytes can be checked), and python-escpos
talking TCP to the ESC/POS emulator.
"""

from __future__ import annotations

import logging

import pytest
from pyzbar.pyzbar import decode

from device.a4 import A4PrinterError, CupsUnavailableError, QueueStoppedError
from device.credential import verify
from device.escpos.errors import PaperOutError, PrinterUnavailableError
from device.privacy import mask_name
from kiosk_ui.certificates import MissingFieldError
from kiosk_ui.issuing import HouseholdNotFoundError, UnknownTemplateError
from tests.certificates.conftest import household_record, page_count, pdf_text, qr_codes

from .conftest import RESIDENT, STRANGER, Kiosk


def _spooled_files(kiosk: Kiosk) -> list[str]:
    return sorted(p.name for p in kiosk.spool.rglob("*") if p.is_file())


def test_card_to_certificate_and_receipt(kiosk: Kiosk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    identity = kiosk.read(RESIDENT)

    issued = kiosk.desk.issue(identity, "residence")
    kiosk.desk.follow(issued)

    assert issued.receipt_printed and issued.receipt_problem is None
    (out,) = kiosk.queue.wait_for_output(1)
    pdf = out.read_bytes()
    assert page_count(pdf) == 1
    assert RESIDENT.name in pdf_text(pdf)
    assert RESIDENT.id_number in pdf_text(pdf)
    (code,) = qr_codes(pdf)
    keys = {kiosk.signing_key.kid: kiosk.signing_key.verify_key}
    assert verify(code, keys, audience=None, now=kiosk.desk.clock.time()).sub == issued.serial

    (receipt,) = kiosk.receipt_model.cut_pages
    text = "\n".join(receipt.lines)
    assert issued.serial in text
    assert f"姓名: {mask_name(RESIDENT.name)}" in text
    assert RESIDENT.name not in text and RESIDENT.id_number not in text
    (scanned,) = decode(kiosk.receipt_model.pages[0])
    assert scanned.data.decode("ascii") == code  # the slip verifies the same way

    assert _spooled_files(kiosk) == []  # both spools empty once printed
    logged = caplog.text
    assert RESIDENT.name not in logged and RESIDENT.id_number not in logged


def test_household_without_address_prints_nothing(kiosk: Kiosk) -> None:
    record = household_record()
    del record["address"]
    kiosk.households.add(RESIDENT.id_number, record)
    identity = kiosk.read(RESIDENT)

    with pytest.raises(MissingFieldError, match="地址") as caught:
        kiosk.desk.issue(identity, "residence")

    assert "no certificate was produced" in str(caught.value)
    assert kiosk.queue.outputs() == []
    assert kiosk.receipt_model.received == bytearray()
    assert _spooled_files(kiosk) == []


def test_resident_without_household_record(kiosk: Kiosk) -> None:
    identity = kiosk.read(STRANGER)
    with pytest.raises(HouseholdNotFoundError) as caught:
        kiosk.desk.issue(identity, "residence")
    message = str(caught.value)
    assert STRANGER.id_number not in message and STRANGER.name not in message
    assert STRANGER.id_number[-4:] in message  # masked, still recognisable to staff
    assert kiosk.receipt_model.received == bytearray()


def test_unknown_template(kiosk: Kiosk) -> None:
    identity = kiosk.read(RESIDENT)
    with pytest.raises(UnknownTemplateError, match="no certificate template 'passport'"):
        kiosk.desk.issue(identity, "passport")


def test_receipt_printer_out_of_paper_keeps_the_receipt(kiosk: Kiosk) -> None:
    identity = kiosk.read(RESIDENT)
    kiosk.receipt_model.paper_out()

    issued = kiosk.desk.issue(identity, "residence")

    assert isinstance(issued.receipt_problem, PaperOutError)
    kiosk.desk.follow(issued)  # the certificate itself was not held back
    assert len(kiosk.queue.wait_for_output(1)) == 1
    assert kiosk.receipt_model.cut_pages == []
    assert len(kiosk.desk.receipts.pending()) == 1

    kiosk.receipt_model.clear_faults()
    printed = kiosk.desk.receipts.print_pending()
    assert len(printed.printed) == 1
    (receipt,) = kiosk.receipt_model.cut_pages
    assert issued.serial in "\n".join(receipt.lines)


def test_receipt_printer_vanishing_mid_receipt_loses_nothing(kiosk: Kiosk) -> None:
    identity = kiosk.read(RESIDENT)
    kiosk.receipt_model.drop_after(40)  # after the status queries, inside the receipt

    issued = kiosk.desk.issue(identity, "residence")

    assert isinstance(issued.receipt_problem, PrinterUnavailableError)
    assert kiosk.receipt_model.cut_pages == []
    assert len(kiosk.desk.receipts.pending()) == 1
    kiosk.desk.receipts.print_pending()
    (receipt,) = kiosk.receipt_model.cut_pages  # printed whole, once
    assert issued.serial in "\n".join(receipt.lines)


def test_stopped_a4_queue_keeps_the_certificate(kiosk: Kiosk) -> None:
    identity = kiosk.read(RESIDENT)
    kiosk.cupsd.disable(kiosk.queue.name, "jammed")

    issued = kiosk.desk.issue(identity, "residence")  # CUPS accepted it; the printer is stopped
    with pytest.raises(QueueStoppedError, match="jammed"):
        kiosk.desk.follow(issued)
    assert [e.key for e in kiosk.desk.a4.pending()] == [issued.a4_job]

    kiosk.cupsd.enable(kiosk.queue.name)
    kiosk.desk.a4.retry(issued.a4_job)
    (out,) = kiosk.queue.wait_for_output(1)
    assert RESIDENT.name in pdf_text(out.read_bytes())
    assert kiosk.desk.a4.pending() == []


def test_cupsd_gone_keeps_the_certificate_and_prints_no_receipt(kiosk: Kiosk) -> None:
    identity = kiosk.read(RESIDENT)
    kiosk.cupsd.stop()

    with pytest.raises(CupsUnavailableError) as caught:
        kiosk.desk.issue(identity, "residence")

    assert isinstance(caught.value, A4PrinterError) and caught.value.key is not None
    assert kiosk.receipt_model.received == bytearray()  # no slip for a page not handed over
    kiosk.cupsd.start()
    kiosk.desk.a4.retry(caught.value.key)
    (out,) = kiosk.queue.wait_for_output(1)
    assert RESIDENT.name in pdf_text(out.read_bytes())
