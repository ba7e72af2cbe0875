"""CardWatcher through the real pcscd: insert/remove events; surviving bad cards and restarts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from device.config import PcscSection
from device.pcsc.apdu import INS_READ_BINARY
from device.pcsc.profile import CardRecord
from device.pcsc.watcher import CardEvent, CardWatcher
from hardware_sim.vpcd import VirtualCard

from .conftest import READER_SLOT0, Pcscd

pytestmark = [pytest.mark.pcscd, pytest.mark.timeout(30)]


class Events:
    """Collects watcher events; ``wait`` blocks until the wanted sequence of kinds has arrived."""

    def __init__(self) -> None:
        self.items: list[CardEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: CardEvent) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.items]

    def wait(self, *kinds: str, timeout_s: float = 5) -> list[CardEvent]:
        """Wait until the events end with ``kinds`` in order (others may come in between)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not _contains_in_order(self.kinds, kinds):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected events {kinds}, got {self.kinds}")
                self._cond.wait(left)
            return list(self.items)


def _contains_in_order(seen: list[str], wanted: tuple[str, ...]) -> bool:
    it = iter(seen)
    return all(kind in it for kind in wanted)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def watcher(pcscd: Pcscd, section: PcscSection, events: Events) -> Iterator[CardWatcher]:
    with CardWatcher(section, events, retry_s=0.2) as w:
        yield w


def test_insert_and_remove_are_reported_with_the_card_read(
    watcher: CardWatcher, card: VirtualCard, events: Events, record: CardRecord
) -> None:
    card.insert()
    inserted = events.wait("inserted")[-1]
    assert inserted.reader == READER_SLOT0
    assert inserted.record == record and inserted.error is None
    card.remove()
    events.wait("inserted", "removed")
    assert events.kinds == ["inserted", "removed"]
    assert watcher.available is True


def test_watcher_survives_a_card_that_disconnects_mid_read(
    watcher: CardWatcher, card: VirtualCard, events: Events, record: CardRecord
) -> None:
    card.remove_during(INS_READ_BINARY)
    card.insert()
    first = events.wait("inserted", "removed")
    assert first[0].record is None
    assert first[0].error is not None and "READ BINARY" in first[0].error
    card.insert()
    again = events.wait("inserted", "removed", "inserted")[-1]
    assert again.record == record


def test_a_failing_event_handler_does_not_stop_the_watcher(
    pcscd: Pcscd, section: PcscSection, card: VirtualCard, caplog: pytest.LogCaptureFixture
) -> None:
    got = Events()

    def handler(event: CardEvent) -> None:
        got(event)
        raise RuntimeError("handler bug")

    with CardWatcher(section, handler, retry_s=0.2):
        card.insert()
        got.wait("inserted")
        card.remove()
        got.wait("inserted", "removed")
    assert "card event handler failed" in caplog.text


def test_no_matching_reader_is_logged_unavailable_once(
    pcscd: Pcscd, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="device.pcsc.watcher")
    with CardWatcher(PcscSection(reader="no such reader"), events, retry_s=0.1) as w:
        events.wait("unavailable")
        time.sleep(0.6)  # several more failed looks
        assert w.available is False
    assert events.kinds == ["unavailable"]
    assert "no PC/SC reader matches" in (events.items[0].error or "")
    assert caplog.text.count("card reader unavailable") == 1


def test_pcscd_restart_unavailable_once_back_once_and_the_card_comes_back(
    pcscd: Pcscd,
    watcher: CardWatcher,
    card: VirtualCard,
    events: Events,
    record: CardRecord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not pcscd.owned:
        pytest.skip("pcscd was already running and is not this session's to restart")
    caplog.set_level(logging.INFO, logger="device.pcsc.watcher")
    card.insert()
    events.wait("inserted")
    try:
        pcscd.stop()
        events.wait("inserted", "removed", "unavailable")
        time.sleep(0.5)  # the watcher keeps retrying meanwhile
    finally:
        pcscd.ensure_running()
    # The virtual card reconnects to the new pcscd by itself; the watcher reads it again.
    after = events.wait("unavailable", "available", "inserted", timeout_s=10)
    assert after[-1].record == record
    assert caplog.text.count("card reader unavailable") == 1
    assert caplog.text.count("card reader back") == 1
