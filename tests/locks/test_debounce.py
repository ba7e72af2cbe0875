"""Debouncer: reed-switch chatter is ignored and a held change is reported once, at the right time.

The debouncer is pure (samples and times in, stable values out), so these tests need no stand-in
for RPi.GPIO; test_gpio.py drives it through ``hardware_sim.gpio.SimGpio``, which stands in for
RPi.GPIO because CI machines have no GPIO pins and RPi.GPIO refuses to load off a Raspberry Pi.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.locks.debounce import TIME_SLACK_S, Debouncer


def feed(debouncer: Debouncer, samples: list[tuple[float, bool]]) -> list[tuple[float, bool]]:
    """Feed (time, raw) samples; return the (time, value) of every stable change reported."""
    reports = []
    for now, raw in samples:
        value = debouncer.update(raw, now)
        if value is not None:
            reports.append((now, value))
    return reports


def every_ms(start_ms: int, end_ms: int, raw: bool) -> list[tuple[float, bool]]:
    return [(ms / 1000, raw) for ms in range(start_ms, end_ms)]


def test_state_is_unknown_until_the_first_reading_holds() -> None:
    debouncer = Debouncer(0.030)
    assert feed(debouncer, every_ms(0, 30, True)) == []
    assert debouncer.state is None
    assert feed(debouncer, every_ms(30, 40, True)) == [(0.030, True)]
    assert debouncer.state is True


def test_chatter_shorter_than_the_window_is_ignored() -> None:
    debouncer = Debouncer(0.030)
    feed(debouncer, every_ms(0, 50, True))
    # A rattle: the contact breaks and makes every few ms for 25 ms, then rests closed again.
    rattle = [(0.050 + i * 0.005, i % 2 == 1) for i in range(6)]
    assert feed(debouncer, [*rattle, *every_ms(80, 200, True)]) == []
    assert debouncer.state is True


def test_a_held_change_is_reported_once_when_it_has_held_for_the_window() -> None:
    debouncer = Debouncer(0.030)
    feed(debouncer, every_ms(0, 100, True))
    [(at, value)] = feed(debouncer, every_ms(100, 300, False))
    assert value is False
    assert at == pytest.approx(0.130)
    assert debouncer.state is False


def test_a_change_that_bounces_first_is_timed_from_its_last_bounce() -> None:
    debouncer = Debouncer(0.030)
    feed(debouncer, every_ms(0, 100, True))
    bounces = [(0.100, False), (0.104, True), (0.109, False), (0.112, True)]
    [(at, value)] = feed(debouncer, [*bounces, *every_ms(115, 300, False)])
    assert value is False
    assert at == pytest.approx(0.145)


def test_zero_window_reports_every_change_at_once() -> None:
    debouncer = Debouncer(0)
    assert feed(debouncer, [(0.0, True), (0.0, False), (0.1, False), (0.2, True)]) == [
        (0.0, True),
        (0.0, False),
        (0.2, True),
    ]


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_a_window_that_is_not_a_finite_non_negative_time_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="debounce time"):
        Debouncer(bad)


samples = st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=40)), max_size=80)


@given(samples, st.integers(min_value=0, max_value=50))
def test_the_stable_value_changes_only_after_a_hold_and_always_after_one(
    steps: list[tuple[bool, int]], stable_ms: int
) -> None:
    """For any sample sequence: a report comes only once the raw value has held >= stable_s since
    it last changed, it differs from the previous stable value, and no long-enough hold is missed.
    """
    stable_s = stable_ms / 1000
    debouncer = Debouncer(stable_s)
    now_ms, run_start, previous_raw, stable = 0, 0.0, None, None
    for raw, dt_ms in steps:
        now_ms += dt_ms
        now = now_ms / 1000
        if raw != previous_raw:
            run_start, previous_raw = now, raw
        held = now - run_start >= stable_s - TIME_SLACK_S
        reported = debouncer.update(raw, now)
        if reported is not None:
            assert reported == raw
            assert held
            assert reported != stable
            stable = reported
        if held:
            assert debouncer.state == raw
        assert debouncer.state == stable
