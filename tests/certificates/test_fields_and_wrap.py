"""Field resolution and line breaking: property tests over arbitrary household data and text."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.config import CertificateSection
from device.credential import SigningKey
from hardware_sim.idcards import sample_card
from kiosk_ui.certificates import CertificateDataError, get_template, render_certificate
from kiosk_ui.certificates.fields import age_on, chinese_date, resolve_fields
from kiosk_ui.certificates.wrap import NO_LINE_START, wrap_text

from .conftest import TODAY, household_record

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.sampled_from(["residence", "difficulty", "elderly_subsidy", "family_relationship"]),
    st.dictionaries(
        st.sampled_from(["address", "residence_since", "members", "difficulty", "phone", "elderly"])
        | st.text(max_size=8),
        json_values,
        max_size=6,
    ),
)
def test_arbitrary_household_data_resolves_or_is_a_typed_error(
    name: str, household: dict[str, Any]
) -> None:
    try:
        values = resolve_fields(
            get_template(name),
            sample_card(0),
            household,
            community="社区",
            today=TODAY,
            serial="S-1",
        )
    except CertificateDataError as err:
        assert err.template == name
        assert err.missing or err.invalid
        return
    assert values["serial"] == "S-1"


def test_computed_values() -> None:
    household = household_record()
    identity = sample_card(0)
    values = resolve_fields(
        get_template("difficulty"), identity, household, community="社区", today=TODAY, serial="S-1"
    )
    assert values["member_count"] == "3"
    elderly = resolve_fields(
        get_template("elderly_subsidy"),
        identity,
        household,
        community="社区",
        today=TODAY,
        serial="S-1",
    )
    assert elderly["age"] == str(age_on(identity.birth, TODAY))
    assert elderly["year"] == "2026"
    assert age_on(dt.date(1950, 11, 24), TODAY) == 75
    assert age_on(dt.date(1950, 11, 23), TODAY) == 76
    assert chinese_date(dt.date(2026, 1, 5)) == "2026年1月5日"


def test_a_long_term_card_prints_long_term() -> None:
    identity = sample_card(0)
    from dataclasses import replace

    long_term = replace(identity, valid_to=None)
    from kiosk_ui.certificates.fields import _card_value

    assert _card_value(long_term, "valid_to") == "长期"


def test_logs_never_carry_the_residents_data(
    caplog: pytest.LogCaptureFixture, signing_key: SigningKey
) -> None:
    identity = sample_card(6)
    household = household_record()
    with caplog.at_level(logging.DEBUG):
        render_certificate(
            get_template("residence"),
            identity,
            household,
            config=CertificateSection(),
            key=signing_key,
            today=TODAY,
        )
    text = caplog.text
    assert "residence" in text
    assert identity.name not in text
    assert identity.id_number not in text
    assert household["address"] not in text


def width(text: str) -> float:
    """Full-width characters count 2, others 1 (a monospace stand-in for the font metrics)."""
    return float(sum(2 if ord(c) > 0x2E80 else 1 for c in text))


@given(
    st.text(
        alphabet=st.sampled_from("兹证明居住在上海市浦东新区幸福路号，。（）ABC0123456789 -"),
        max_size=200,
    ),
    st.integers(4, 60),
)
def test_wrapping_keeps_every_character_and_respects_the_width(text: str, limit: int) -> None:
    lines = wrap_text(text, width, limit)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    for line in lines:
        # Only closing punctuation may hang past the edge.
        overflow = line
        while overflow and width(overflow) > limit and overflow[-1] in NO_LINE_START:
            overflow = overflow[:-1]
        assert width(overflow) <= limit or len(overflow) == 1


def test_numbers_are_not_split_and_punctuation_does_not_start_a_line() -> None:
    text = "公民身份号码：31011520000801858X，自2015年起"
    lines = wrap_text(text, width, 24)
    assert any("31011520000801858X" in line for line in lines)
    assert not any(line[0] in NO_LINE_START for line in lines)
