"""Personal data is masked before it reaches a log line."""

from __future__ import annotations

import logging

import pytest

from device.privacy import RedactingFilter, mask_id_number, mask_name, redact


def test_mask_id_number_keeps_region_and_last_four() -> None:
    assert mask_id_number("11010519491231002X") == "110105********002X"


def test_mask_name_keeps_first_character() -> None:
    assert mask_name("张三丰") == "张**"
    assert mask_name("") == ""


def test_redact_masks_every_id_number_in_text() -> None:
    text = "card 11010519491231002X then 440301199001011234."
    cleaned = redact(text)
    assert "19491231" not in cleaned and "19900101" not in cleaned
    assert "110105********002X" in cleaned


def test_redacting_filter_scrubs_log_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("linli.test.privacy")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="linli.test.privacy"):
        logger.info("read card %s", "11010519491231002X")
    assert "11010519491231002X" not in caplog.text
    assert "110105********002X" in caplog.text
