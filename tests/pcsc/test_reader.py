"""PcscReader through the real pcscd and the vpcd driver, with the virtual card as the only fake."""

from __future__ import annotations

import threading
import time

import pytest

from device.config import PcscSection
from device.errors import DeviceClosedError, DeviceUnavailableError, ProtocolError
from device.pcsc.apdu import INS_READ_BINARY, INS_SELECT
from device.pcsc.errors import (
    CardFileNotFoundError,
    CardRemovedError,
    InstructionNotSupportedError,
    NoCardError,
    SecurityStatusError,
    UnexpectedStatusError,
)
from device.pcsc.profile import CardRecord, encode_record
from device.pcsc.reader import PcscReader
from hardware_sim.vpcd import VirtualCard

from .conftest import READER_SLOT0, Pcscd, make_number

pytestmark = [pytest.mark.pcscd, pytest.mark.timeout(30)]

GOLDEN_TRACE = """\
> 00 A4 04 00 07 F0 4C 49 4E 4C 49 01 00
< 61 0B
> 00 C0 00 00 0B
< 6F 09 84 07 F0 4C 49 4E 4C 49 01 90 00
> 00 B0 00 00 80
< 6C 1F
> 00 B0 00 00 1F
< 70 1D 5A 0A 62 10 98 52 00 00 12 34 56 0F 80 01 02 81 06 33 31 30 31 31 35 82 04 20 30 12 31 90 00
"""


def test_discovery_lists_the_virtual_reader(reader: PcscReader) -> None:
    assert READER_SLOT0 in reader.list_readers()
    assert reader.find_reader() == READER_SLOT0


def test_filter_is_a_case_insensitive_substring(pcscd: object) -> None:
    with PcscReader(PcscSection(reader="virtual pcd 00 01")) as r:
        assert r.find_reader() == "Virtual PCD 00 01"


def test_no_reader_matching_the_filter_names_what_was_looked_for(pcscd: object) -> None:
    with (
        PcscReader(PcscSection(reader="ACS ACR122U")) as r,
        pytest.raises(DeviceUnavailableError) as info,
    ):
        r.read_record(0.2)
    message = str(info.value)
    assert "'ACS ACR122U'" in message and READER_SLOT0 in message


def test_insert_then_read_number_with_the_exact_apdus(
    reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    assert not reader.card_present()
    card.insert()
    result = reader.read(3)
    assert result.reader == READER_SLOT0
    assert result.record == record
    assert result.atr == card.atr
    assert card.transcript_text() == GOLDEN_TRACE
    assert reader.card_present()


def test_read_card_number_waits_for_a_card_inserted_later(
    reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    timer = threading.Timer(0.5, card.insert)
    timer.start()
    try:
        started = time.monotonic()
        assert reader.read_card_number(5) == record.number
        assert time.monotonic() - started >= 0.4
    finally:
        timer.join()


def test_no_card_within_the_wait_is_no_card_error(reader: PcscReader, card: VirtualCard) -> None:
    started = time.monotonic()
    with pytest.raises(NoCardError, match=r"within 0.6 s") as info:
        reader.read_record(0.6)
    assert isinstance(info.value, TimeoutError)
    assert 0.5 <= time.monotonic() - started < 2


def test_removal_is_seen(reader: PcscReader, card: VirtualCard) -> None:
    card.insert()
    reader.wait_for_card(3)
    assert not reader.wait_for_removal(0.3)  # still there
    card.remove()
    assert reader.wait_for_removal(3)
    assert not reader.card_present()


def test_card_removed_mid_exchange_is_a_clear_error_and_the_next_insert_reads(
    reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    card.insert()
    card.remove_during(INS_READ_BINARY)
    with pytest.raises(CardRemovedError, match="READ BINARY") as info:
        reader.read_record(3)
    assert "present it again" in str(info.value)
    assert info.value.__cause__ is not None  # pyscard's exception is kept as the cause
    assert reader.wait_for_removal(3)
    other = CardRecord(make_number("622848000011112222"), record.kind, "110105", record.expiry)
    card.insert(other)
    assert reader.read_record(3) == other


@pytest.mark.parametrize(
    ("ins", "sw", "error"),
    [
        (INS_SELECT, 0x6A82, CardFileNotFoundError),
        (INS_READ_BINARY, 0x6982, SecurityStatusError),
        (INS_READ_BINARY, 0x6D00, InstructionNotSupportedError),
        (INS_SELECT, 0x6F00, UnexpectedStatusError),
    ],
)
def test_wrong_status_words_become_typed_errors(
    reader: PcscReader, card: VirtualCard, ins: int, sw: int, error: type[Exception]
) -> None:
    card.insert()
    card.fail(ins, sw)
    with pytest.raises(error, match=f"{sw:04X}"):
        reader.read_record(3)
    assert reader.read_record(3).issuer == "310115"  # the fault was one-shot; the card still reads


def test_corrupt_record_on_the_card_is_a_protocol_error(
    reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    broken = bytearray(encode_record(record))
    broken[-1] = 0x32  # 2030-12-32
    card.insert(file_bytes=bytes(broken))
    with pytest.raises(ProtocolError, match="not a calendar date"):
        reader.read_record(3)


def test_slow_card_is_waited_for(reader: PcscReader, card: VirtualCard, record: CardRecord) -> None:
    card.insert()
    card.slow(0.4, ins=INS_READ_BINARY, times=2)
    started = time.monotonic()
    assert reader.read_record(3) == record
    assert time.monotonic() - started >= 0.8


def test_close_twice_and_use_after_close(pcscd: object, section: PcscSection) -> None:
    reader = PcscReader(section)
    assert reader.list_readers()
    reader.close()
    reader.close()
    with pytest.raises(DeviceClosedError):
        reader.list_readers()
    with pytest.raises(DeviceClosedError):
        reader.read_record(0.1)


def test_pcscd_gone_is_device_unavailable_naming_pcscd_then_reads_again(
    pcscd: Pcscd, reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    if not pcscd.owned:
        pytest.skip("pcscd was already running and is not this session's to stop")
    card.insert()
    assert reader.read_record(3) == record
    try:
        pcscd.stop()
        with pytest.raises(DeviceUnavailableError, match="pcscd is not running"):
            reader.read_record(1)
    finally:
        pcscd.ensure_running()
    # Same reader object: it drops its stale context and the card reconnects to the new pcscd.
    assert reader.read_record(5) == record


def test_swapping_cards_reads_the_new_one(
    reader: PcscReader, card: VirtualCard, record: CardRecord
) -> None:
    card.insert()
    assert reader.read_record(3) == record
    other = CardRecord(make_number("622848000011112222"), record.kind, "110105", record.expiry)
    card.insert(other)
    assert reader.read_record(3) == other
