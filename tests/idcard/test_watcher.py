"""The watcher loop survives garbage, stalls and an unplugged reader, and reports each card once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from device.idcard.codec import Command
from device.idcard.identity import Identity
from device.idcard.watcher import IdCardWatcher
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from tests.idcard.conftest import wait_until

pytestmark = pytest.mark.timeout(40)


class Cards:
    """What a consumer of the watcher sees: the cards delivered, in order."""

    def __init__(self) -> None:
        self.seen: list[Identity] = []
        self._lock = threading.Lock()

    def __call__(self, identity: Identity) -> None:
        with self._lock:
            self.seen.append(identity)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


def watcher_for(port: str, cards: Cards) -> IdCardWatcher:
    return IdCardWatcher(
        None, cards, port=port, timeout_s=0.2, retries=0, backoff_s=0.05, max_backoff_s=0.2
    )


def test_reports_each_card_once_per_placement(emulator: SamEmulator) -> None:
    cards = Cards()
    with watcher_for(emulator.path, cards) as watcher:
        assert wait_until(lambda: watcher.available)
        emulator.insert(sample_card(0))
        assert wait_until(lambda: cards.count() == 1)
        threading.Event().wait(1.0)  # the card stays: several polls, no second report
        assert cards.count() == 1
        emulator.lift()
        threading.Event().wait(0.4)
        emulator.insert(sample_card(1))
        assert wait_until(lambda: cards.count() == 2)
    assert cards.seen == [sample_card(0), sample_card(1)]


def test_survives_garbage_stalls_and_a_failing_callback(
    emulator: SamEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Cards()
    calls = []

    def flaky(identity: Identity) -> None:
        calls.append(identity)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")
        seen(identity)

    with IdCardWatcher(
        None, flaky, port=emulator.path, timeout_s=0.2, retries=0, backoff_s=0.05, max_backoff_s=0.5
    ) as watcher:
        emulator.noise_instead_of_next(times=3)
        emulator.corrupt_next(Command.FIND_CARD, times=2)
        emulator.insert(sample_card(0))
        assert wait_until(lambda: len(calls) == 1, timeout=8)
        emulator.silent = True  # a stalled module: timeouts, then reopen attempts
        assert wait_until(lambda: not watcher.available, timeout=8)
        threading.Event().wait(0.5)  # a few failed reopen attempts while it stays silent
        emulator.silent = False
        emulator.lift()
        emulator.insert(sample_card(2))
        assert wait_until(lambda: seen.count() == 1, timeout=8)
        assert watcher.available
    assert seen.seen == [sample_card(2)]
    assert "ID-card callback failed" in caplog.text


def test_unplugged_reader_is_reopened_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="device.idcard")
    link = tmp_path / "linli-idcard"
    cards = Cards()
    with (
        SamEmulator(link=link) as emulator,
        watcher_for(str(link), cards) as watcher,
    ):
        emulator.insert(sample_card(0))
        assert wait_until(lambda: cards.count() == 1)
        emulator.unplug()
        assert wait_until(lambda: not watcher.available)
        threading.Event().wait(1.0)  # several failed reopen attempts
        emulator.plug()
        emulator.lift()
        emulator.insert(sample_card(5))
        assert wait_until(lambda: cards.count() == 2, timeout=8)
        assert watcher.available
    assert cards.seen == [sample_card(0), sample_card(5)]
    # At WARNING (what a technician sees): "unavailable" once, "back" once; retries go to DEBUG.
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    unavailable = [m for m in shown if "unavailable" in m]
    back = [m for m in shown if m.endswith("is back")]
    assert len(unavailable) == 1
    assert len(back) == 1


def test_stop_is_safe_twice_and_run_honours_an_external_event(emulator: SamEmulator) -> None:
    cards = Cards()
    watcher = watcher_for(emulator.path, cards)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    emulator.insert(sample_card(0))
    assert wait_until(lambda: cards.count() == 1)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    watcher.stop()
    watcher.stop()


class Events:
    """Every callback of the watcher, in order: ("card", identity), ("error", type), ("lifted",)."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, ...]] = []
        self._lock = threading.Lock()

    def card(self, identity: Identity) -> None:
        with self._lock:
            self.seen.append(("card", identity))

    def error(self, err: Exception) -> None:
        with self._lock:
            self.seen.append(("error", type(err).__name__))

    def lifted(self) -> None:
        with self._lock:
            self.seen.append(("lifted",))

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


def events_watcher(port: str, events: Events, *, report_lift: bool) -> IdCardWatcher:
    return IdCardWatcher(
        None,
        events.card,
        on_read_error=events.error,
        on_lifted=events.lifted,
        port=port,
        timeout_s=0.2,
        retries=0,
        report_lift=report_lift,
    )


def test_a_card_that_cannot_be_read_is_reported_once_per_placement(emulator: SamEmulator) -> None:
    """A forged card (authentication fails) lying on the reader is refused once, not every poll;
    put back, it is tried again; a card lifted mid-read is its own error."""
    events = Events()
    with events_watcher(emulator.path, events, report_lift=False) as watcher:
        assert wait_until(lambda: watcher.available)
        emulator.refind_after_read = True  # the reader keeps finding the card
        emulator.fail_next(Command.READ_TEXT_PHOTO, sw3=0x31, times=1)
        emulator.insert(sample_card(0))
        assert wait_until(lambda: events.count() == 1)
        threading.Event().wait(1.0)  # several polls with the card still there: no second report
        assert events.seen == [("error", "CardAuthenticationError")]
        emulator.lift()
        threading.Event().wait(0.4)
        emulator.lift_during_next_read()
        emulator.insert(sample_card(1))
        assert wait_until(lambda: events.count() == 2, timeout=5)
        threading.Event().wait(0.4)  # a poll sees the reader empty
        emulator.insert(sample_card(1))  # put back properly
        assert wait_until(lambda: events.count() == 3, timeout=5)
        assert watcher.available  # card faults are not reader faults
    assert events.seen[1][0] == "error"
    assert events.seen[2] == ("card", sample_card(1))


@pytest.mark.parametrize("report_lift", [True, False])
def test_lifted_is_reported_only_when_configured(emulator: SamEmulator, report_lift: bool) -> None:
    events = Events()
    emulator.refind_after_read = True
    with events_watcher(emulator.path, events, report_lift=report_lift) as watcher:
        assert wait_until(lambda: watcher.available)
        emulator.insert(sample_card(3))
        assert wait_until(lambda: events.count() == 1)
        threading.Event().wait(0.8)  # still on the reader: nothing more
        assert events.count() == 1
        emulator.lift()
        threading.Event().wait(0.8)
    expected: list[tuple[object, ...]] = [("card", sample_card(3))]
    assert events.seen == ([*expected, ("lifted",)] if report_lift else expected)
