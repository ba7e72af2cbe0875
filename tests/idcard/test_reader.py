"""SamReader against the SAM emulator on a real pty: happy path, every fault, polling, privacy."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import pytest

from device.clock import FakeClock
from device.config import IdCardSection
from device.errors import (
    ConfigError,
    DeviceClosedError,
    DeviceTimeoutError,
    DeviceUnavailableError,
)
from device.idcard.codec import Command
from device.idcard.errors import (
    FAILURE_CODES,
    CardReadError,
    FrameError,
    NoCardError,
    SamFailureError,
    SamStatusError,
    UnknownStatusError,
    status_error,
)
from device.idcard.reader import SamReader
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator

pytestmark = pytest.mark.timeout(30)

CARD = sample_card(0)


def test_reads_the_card_on_the_reader(emulator: SamEmulator, reader: SamReader) -> None:
    assert reader.read_card() is None
    emulator.insert(CARD)
    identity = reader.read_card()
    assert identity == CARD
    assert identity is not None and identity.id_number_valid
    assert emulator.commands == [
        "reset_sam",
        "sam_status",
        "find_card",
        "find_card",
        "select_card",
        "read_text_photo",
    ]


def test_a_card_already_read_is_not_found_until_put_back(
    emulator: SamEmulator, reader: SamReader
) -> None:
    emulator.insert(CARD)
    assert reader.read_card() == CARD
    assert reader.read_card() is None
    emulator.lift()
    emulator.insert(CARD)
    assert reader.read_card() == CARD


def test_fingerprint_read(emulator: SamEmulator) -> None:
    card = sample_card(3, fingerprint=True)
    emulator.insert(card)
    with SamReader(port=emulator.path, read_fingerprint=True, timeout_s=0.5) as reader:
        assert reader.read_card() == card
    assert "read_text_photo_fingerprint" in emulator.commands


def test_sam_id(reader: SamReader, emulator: SamEmulator) -> None:
    assert reader.sam_id() == emulator.sam_id


def test_config_section_and_kwargs(emulator: SamEmulator) -> None:
    section = IdCardSection(port=emulator.path, timeout_s=0.4, poll_interval_ms=500)
    with SamReader(section, retries=0) as reader:
        assert reader.settings.timeout_s == 0.4
        assert reader.settings.poll_interval_ms == 500
        assert reader.settings.retries == 0
    with pytest.raises(ConfigError, match="poll_interval_ms"):
        SamReader(port=emulator.path, poll_interval_ms=50)


# -- every failure status --------------------------------------------------------------------------
@pytest.mark.parametrize("sw3", FAILURE_CODES)
def test_each_failure_status_of_read_raises_its_typed_error(
    emulator: SamEmulator, reader: SamReader, sw3: int
) -> None:
    emulator.insert(CARD)
    emulator.fail_next(Command.READ_TEXT_PHOTO, sw3)
    with pytest.raises(type(status_error(sw3))) as info:
        reader.read_card()
    assert info.value.sw3 == sw3
    assert info.value.command == "read_text_photo"
    # The reader is still usable: put the card back and it reads.
    emulator.lift()
    emulator.insert(CARD)
    assert reader.read_card() == CARD


@pytest.mark.parametrize("sw3", [0x80, 0x34])
def test_find_failure_means_no_card(emulator: SamEmulator, reader: SamReader, sw3: int) -> None:
    emulator.insert(CARD)
    emulator.fail_next(Command.FIND_CARD, sw3)
    assert reader.read_card() is None
    assert reader.read_card() == CARD


def test_select_failure_means_the_card_left(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.fail_next(Command.SELECT_CARD, 0x81)
    assert reader.read_card() is None


def test_unknown_status(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.fail_next(Command.SELECT_CARD, 0x55)
    with pytest.raises(UnknownStatusError, match="SW3 55"):
        reader.read_card()


def test_sam_self_test_failure_at_open(emulator: SamEmulator) -> None:
    emulator.fail_next(Command.SAM_STATUS, 0x60)
    with pytest.raises(SamFailureError, match="self-test failed"):
        SamReader(port=emulator.path, timeout_s=0.3)


# -- damaged replies ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_a_damaged_reply_is_retried(emulator: SamEmulator, reader: SamReader, fault: str) -> None:
    emulator.insert(CARD)
    if fault == "truncate":
        emulator.truncate_next(Command.READ_TEXT_PHOTO)
    else:
        emulator.corrupt_next(Command.READ_TEXT_PHOTO)
    assert reader.read_card() == CARD
    assert emulator.commands.count("read_text_photo") == 2


@pytest.mark.parametrize(("fault", "kind"), [("truncate", "truncated"), ("corrupt", "checksum")])
def test_a_damaged_reply_without_retries_is_a_frame_error(
    emulator: SamEmulator, fault: str, kind: str
) -> None:
    with SamReader(port=emulator.path, timeout_s=0.3, retries=0) as reader:
        emulator.insert(CARD)
        if fault == "truncate":
            emulator.truncate_next(Command.SELECT_CARD, keep=9)
        else:
            emulator.corrupt_next(Command.SELECT_CARD)
        with pytest.raises(FrameError) as info:
            reader.read_card()
        assert info.value.kind == kind
        # Next cycle: the input was flushed and the reader resynchronised.
        assert reader.read_card() == CARD


def test_garbage_before_a_reply_is_skipped(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.garbage_before_next(garbage=bytes.fromhex("00 FF AA AA 96 13 AA"), times=3)
    assert reader.read_card() == CARD
    assert emulator.commands.count("read_text_photo") == 1  # no retry was needed


def test_noise_instead_of_a_reply(emulator: SamEmulator) -> None:
    with SamReader(port=emulator.path, timeout_s=0.3, retries=0) as reader:
        emulator.noise_instead_of_next(Command.FIND_CARD)
        with pytest.raises(FrameError, match="no valid reply to find_card") as info:
            reader.read_card()
        assert info.value.kind == "garbage"
    with SamReader(port=emulator.path, timeout_s=0.3, retries=1) as reader:
        emulator.insert(CARD)
        emulator.noise_instead_of_next(Command.FIND_CARD)
        assert reader.read_card() == CARD


def test_card_lifted_mid_read(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.lift_during_next_read()
    with pytest.raises(CardReadError) as info:
        reader.read_card()
    assert info.value.sw3 == 0x41
    assert emulator.card is None
    assert reader.read_card() is None
    emulator.insert(CARD)
    assert reader.read_card() == CARD


# -- silent, slow, unplugged -------------------------------------------------------------------
def test_silent_reader_times_out_then_recovers(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.silent = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match=r"did not answer find_card within 0.3 s"):
        reader.read_card()
    elapsed = time.monotonic() - start
    assert 0.55 <= elapsed < 1.5  # two attempts of 0.3 s, real serial timeouts
    emulator.silent = False
    assert reader.read_card() == CARD


def test_one_unanswered_request_is_retried(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.insert(CARD)
    emulator.silence_next(Command.SELECT_CARD)
    assert reader.read_card() == CARD


def test_slow_reader_within_and_beyond_the_timeout(emulator: SamEmulator) -> None:
    emulator.insert(CARD)
    emulator.reply_delay_s = 0.1
    with SamReader(port=emulator.path, timeout_s=0.5, retries=0) as reader:
        assert reader.read_card() == CARD
    emulator.reply_delay_s = 0.4
    with pytest.raises(DeviceTimeoutError):
        SamReader(port=emulator.path, timeout_s=0.2, retries=0)


def test_missing_port_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="cannot open"):
        SamReader(port=str(tmp_path / "no-such-tty"))


def test_unplugged_while_open_is_unavailable(emulator: SamEmulator, reader: SamReader) -> None:
    emulator.unplug()
    with pytest.raises(DeviceUnavailableError):
        reader.read_card()


def test_close_twice_and_use_after_close(reader: SamReader) -> None:
    reader.close()
    reader.close()
    assert reader.closed
    with pytest.raises(DeviceClosedError):
        reader.read_card()


# -- polling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("refind", [False, True])
def test_poll_reports_a_card_once_until_lifted(emulator: SamEmulator, refind: bool) -> None:
    emulator.refind_after_read = refind
    clock = FakeClock()
    with SamReader(port=emulator.path, timeout_s=0.3, clock=clock) as reader:
        assert reader.poll() is None
        emulator.insert(CARD)
        reports = [reader.poll() for _ in range(4)]
        assert reports[0] == CARD
        assert reports[1:] == [None, None, None]
        emulator.lift()
        assert reader.poll() is None
        emulator.insert(sample_card(1))
        assert reader.poll() == sample_card(1)
    assert emulator.commands.count("read_text_photo") == 2


def test_poll_respects_the_interval_on_the_injected_clock(emulator: SamEmulator) -> None:
    clock = FakeClock()
    with SamReader(port=emulator.path, poll_interval_ms=400, clock=clock) as reader:
        times = []
        for _ in range(5):
            reader.poll()
            times.append(clock.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.4] * 4)  # never faster, and no needless waiting
    assert emulator.commands.count("find_card") == 5


def test_poll_respects_the_interval_in_real_time(emulator: SamEmulator) -> None:
    with SamReader(port=emulator.path, poll_interval_ms=300) as reader:
        start = time.monotonic()
        for _ in range(3):
            reader.poll()
        assert time.monotonic() - start >= 0.6


# -- privacy -------------------------------------------------------------------------------------
def test_logs_never_carry_name_or_id_number(
    emulator: SamEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad_card = sample_card(4)
    emulator.insert(bad_card)
    with SamReader(port=emulator.path, timeout_s=0.3) as reader:
        emulator.garbage_before_next()
        emulator.corrupt_next(Command.READ_TEXT_PHOTO)
        identity = reader.read_card()
        assert identity == bad_card
        logging.getLogger("test").info("read %s", identity)
    assert caplog.records, "the read should have been logged at DEBUG"
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in (bad_card.name, bad_card.id_number, bad_card.address, bad_card.name[1:]):
        assert secret not in text
    assert bad_card.id_number[:6] in text  # the masked form is there


def test_status_errors_are_device_errors() -> None:
    assert issubclass(NoCardError, SamStatusError)
    assert issubclass(SamStatusError, OSError)
