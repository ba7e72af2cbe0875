"""The real SerialScanner (pyserial) against the GM65 emulator on a pty, paced at 9600 baud."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.config import ScannerSection
from device.errors import DeviceClosedError, DeviceTimeoutError, DeviceUnavailableError
from device.scanner.serial_scanner import SerialScanner
from hardware_sim.scanner import Gm65Emulator

GOLDEN = Path(__file__).parent / "golden"
CREDENTIAL = "LQ1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "linli-scanner"


@pytest.fixture
def emulator(link: Path) -> Iterator[Gm65Emulator]:
    with Gm65Emulator(link=str(link)) as emu:
        yield emu


def config(link: Path, **changes: object) -> ScannerSection:
    values: dict[str, object] = {"port": str(link), "reconnect_s": 0.05, "max_length": 64}
    return ScannerSection.model_validate({**values, **changes})


@pytest.fixture
def scanner(emulator: Gm65Emulator, link: Path) -> Iterator[SerialScanner]:
    with SerialScanner(config(link), line_gap_s=0.1) as sc:
        yield sc


def test_shown_code_arrives_as_an_event(emulator: Gm65Emulator, scanner: SerialScanner) -> None:
    emulator.show("居住证明 " + CREDENTIAL)
    event = scanner.read_event(timeout=2)
    assert event is not None
    assert event.text == "居住证明 " + CREDENTIAL
    assert event.source == f"serial:{emulator.link}"


def test_crlf_module(link: Path) -> None:
    with Gm65Emulator(link=str(link), terminator=b"\r\n") as emu, SerialScanner(config(link)) as sc:
        for text in ("one", "two", "three"):
            emu.show(text)
        got = [sc.read_event(timeout=2) for _ in range(3)]
        assert [e.text for e in got if e is not None] == ["one", "two", "three"]
        assert sc.read_event(timeout=0.2) is None  # the LF of each CRLF is not an empty scan
        assert not sc.rejections


def test_trigger_is_acked_and_the_code_follows(
    emulator: Gm65Emulator, scanner: SerialScanner
) -> None:
    emulator.command_mode = True
    emulator.show(CREDENTIAL)
    assert scanner.read_event(timeout=0.3) is None  # command mode: nothing until triggered
    emulator.clear_transcript()
    scanner.trigger(timeout=1)
    event = scanner.read_event(timeout=2)
    assert event is not None and event.text == CREDENTIAL
    golden = (GOLDEN / "gm65_trigger_scan.txt").read_text()
    assert emulator.transcript_text() == golden


def test_trigger_with_nothing_in_view_sends_nothing_after_the_ack(
    emulator: Gm65Emulator, scanner: SerialScanner
) -> None:
    emulator.command_mode = True
    scanner.trigger(timeout=1)
    assert scanner.read_event(timeout=0.3) is None
    assert emulator.transcript_text().splitlines()[-1] == "< 02 00 00 01 00 33 31"


def test_silent_module_times_out_and_the_scanner_keeps_working(
    emulator: Gm65Emulator, scanner: SerialScanner
) -> None:
    emulator.silent = True
    with pytest.raises(DeviceTimeoutError, match="no answer"):
        scanner.trigger(timeout=0.3)
    emulator.silent = False
    scanner.trigger(timeout=1)
    emulator.show("still here")
    event = scanner.read_event(timeout=2)
    assert event is not None and event.text == "still here"


def test_settings_write_read_save(emulator: Gm65Emulator, scanner: SerialScanner) -> None:
    scanner.write_setting(0x000D, b"\x02")
    assert scanner.read_setting(0x000D) == b"\x02"
    scanner.save_settings()
    assert emulator.saved[0x0D] == 0x02
    assert [c.kind.name for c in emulator.commands] == ["WRITE", "READ", "SAVE"]


def test_garbage_then_a_scan(emulator: Gm65Emulator, scanner: SerialScanner) -> None:
    emulator.send_garbage(40, seed=3)
    assert scanner.read_event(timeout=0.4) is None
    emulator.show("after the noise")
    event = scanner.read_event(timeout=2)
    assert event is not None and event.text == "after the noise"
    assert sum(scanner.rejections.values()) >= 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (lambda emu: emu.show_non_utf8(), "not_utf8"),
        (lambda emu: emu.show_too_long(500), "too_long"),
        (lambda emu: emu.show_control_characters(), "control_character"),
    ],
)
def test_bad_payloads_are_not_delivered(
    emulator: Gm65Emulator,
    scanner: SerialScanner,
    fault: object,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        fault(emulator)  # type: ignore[operator]
        emulator.show("good")
        event = scanner.read_event(timeout=3)
    assert event is not None and event.text == "good"
    assert scanner.rejections == {reason: 1}
    assert reason in caplog.text
    assert "LQ1:AB" not in caplog.text and "AAAA" not in caplog.text


def test_unplug_and_replug(
    emulator: Gm65Emulator, scanner: SerialScanner, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.show("before")
    assert scanner.read_event(timeout=2) is not None
    with caplog.at_level(logging.WARNING, logger="device.scanner.serial_scanner"):
        emulator.unplug()
        for _ in range(3):  # several reads during the outage: still one "unavailable" line
            assert scanner.read_event(timeout=0.15) is None
        assert not scanner.available
        with pytest.raises(DeviceUnavailableError):
            scanner.trigger(timeout=0.2)
        emulator.plug()
        while not scanner.available:
            scanner.read_event(timeout=0.05)
        emulator.show("after")
        event = scanner.read_event(timeout=2)
    assert event is not None and event.text == "after"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum(m.endswith("back") for m in messages) == 1


def test_port_missing_at_start_is_retried(link: Path) -> None:
    with SerialScanner(config(link)) as sc:
        assert not sc.available
        assert sc.read_event(timeout=0.1) is None
        with Gm65Emulator(link=str(link)) as emu:
            while not sc.available:
                sc.read_event(timeout=0.05)
            emu.show("late")
            event = sc.read_event(timeout=2)
    assert event is not None and event.text == "late"


def test_events_iterator_ends_when_closed_from_another_thread(
    emulator: Gm65Emulator, link: Path
) -> None:
    scanner = SerialScanner(config(link)).open()
    got: list[str] = []

    def consume() -> None:
        got.extend(event.text for event in scanner.events())

    thread = threading.Thread(target=consume)
    thread.start()
    emulator.show("a")
    emulator.show("b")
    deadline = threading.Event()
    for _ in range(100):
        if len(got) == 2:
            break
        deadline.wait(0.05)
    scanner.close()
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert got == ["a", "b"]


def test_close_twice_and_use_after_close(scanner: SerialScanner) -> None:
    scanner.close()
    scanner.close()
    with pytest.raises(DeviceClosedError):
        scanner.read_event(timeout=0.1)
    with pytest.raises(DeviceClosedError):
        scanner.trigger()
    assert list(scanner.events()) == []


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=15, deadline=None)
def test_random_bytes_on_the_wire_never_stop_the_scanner(
    tmp_path_factory: pytest.TempPathFactory, noise: bytes
) -> None:
    link = tmp_path_factory.mktemp("noise") / "scanner"
    with (
        Gm65Emulator(link=str(link), pace=False) as emu,
        SerialScanner(config(link), line_gap_s=0.05) as sc,
    ):
        emu.send(noise)
        while sc.read_event(timeout=0.15) is not None:
            pass  # noise that happens to form valid lines is delivered; drain it
        emu.show("sentinel")
        event = sc.read_event(timeout=2)
    assert event is not None and event.text == "sentinel"
