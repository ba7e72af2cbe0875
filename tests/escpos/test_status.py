"""DLE EOT status codec: exhaustive over all 256 bytes, against the HARDWARE.md bit table."""

from __future__ import annotations

import pytest

from device.errors import DeviceError, ProtocolError
from device.escpos import status as st
from device.escpos.errors import (
    CoverOpenError,
    PaperOutError,
    PrinterError,
    PrinterOfflineError,
)

PARSERS = [st.PrinterStatus.parse, st.OfflineCause.parse, st.ErrorCause.parse, st.PaperStatus.parse]


def _valid(byte: int) -> bool:
    return byte & 0x12 == 0x12 and not byte & 0x80


def test_queries_are_dle_eot_n() -> None:
    assert [st.query(n) for n in (1, 2, 3, 4)] == [bytes([0x10, 0x04, n]) for n in (1, 2, 3, 4)]
    with pytest.raises(ValueError):
        st.query(5)


@pytest.mark.parametrize("parse", PARSERS)
def test_every_byte_parses_or_is_a_protocol_error(parse: object) -> None:
    assert callable(parse)
    for byte in range(256):
        if _valid(byte):
            parse(byte)
        else:
            with pytest.raises(ProtocolError):
                parse(byte)


def test_printer_status_bits() -> None:
    for byte in filter(_valid, range(256)):
        s = st.PrinterStatus.parse(byte)
        assert s.offline == bool(byte & 0x08)
        assert s.drawer_pin3_high == bool(byte & 0x04)
        assert s.feed_button_pressed == bool(byte & 0x40)


def test_offline_cause_and_paper_bits() -> None:
    for byte in filter(_valid, range(256)):
        cause = st.OfflineCause.parse(byte)
        assert (cause.cover_open, cause.feed_button, cause.paper_end_stop, cause.error) == (
            bool(byte & 4), bool(byte & 8), bool(byte & 0x20), bool(byte & 0x40),
        )  # fmt: skip
        paper = st.PaperStatus.parse(byte)
        assert paper.near_end == bool(byte & 0x0C)
        assert paper.out == bool(byte & 0x60)


def test_idle_byte_means_ready() -> None:
    report = st.StatusReport(
        st.PrinterStatus.parse(0x12), st.OfflineCause.parse(0x12), st.PaperStatus.parse(0x12)
    )
    assert report.ready and st.problem(report) is None and st.warnings_of(report) == []


def _report(p1: int, p2: int, p4: int, p3: int | None = None) -> st.StatusReport:
    return st.StatusReport(
        st.PrinterStatus.parse(p1),
        st.OfflineCause.parse(p2),
        st.PaperStatus.parse(p4),
        None if p3 is None else st.ErrorCause.parse(p3),
    )


@pytest.mark.parametrize(
    ("p1", "p2", "p4", "error"),
    [
        (0x1A, 0x32, 0x7E, PaperOutError),  # HARDWARE.md: 0x60 paper out
        (0x1A, 0x16, 0x12, CoverOpenError),
        (0x1A, 0x52, 0x12, PrinterOfflineError),
        (0x1A, 0x12, 0x12, PrinterOfflineError),
    ],
)
def test_faults_map_to_typed_errors(p1: int, p2: int, p4: int, error: type[PrinterError]) -> None:
    issue = st.problem(_report(p1, p2, p4, 0x52 if p2 & 0x40 else None))
    assert type(issue) is error
    assert isinstance(issue, DeviceError)
    assert issue is not None and " / " in str(issue)  # Chinese / English


def test_near_end_is_a_warning_not_an_error() -> None:
    report = _report(0x12, 0x12, 0x1E)
    assert st.problem(report) is None
    assert [type(w).__name__ for w in st.warnings_of(report)] == ["PaperNearEndWarning"]
    assert "即将用完" in str(st.warnings_of(report)[0])
    assert report.to_dict()["paper_near_end"] is True
