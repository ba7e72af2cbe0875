"""The device configuration: valid files load, every kind of mistake names the key that is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.config import DeviceConfig, load_config, parse_config
from device.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _base(**sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"device": {"id": "kiosk-1", "kind": "kiosk"}}
    data.update(sections)
    return data


@pytest.mark.parametrize("name", ["kiosk.toml", "locker.toml"])
def test_shipped_examples_load(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert isinstance(cfg, DeviceConfig)


def test_example_locker_uses_camera_and_no_idcard() -> None:
    cfg = load_config(EXAMPLES / "locker.toml")
    assert cfg.scanner.backend == "camera"
    assert cfg.idcard.backend == "none"


def test_defaults_fill_missing_sections() -> None:
    cfg = parse_config(_base())
    assert cfg.idcard.baudrate == 115200
    assert cfg.idcard.poll_interval_ms == 300
    assert cfg.scanner.baudrate == 9600


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"idcard\.baud: unknown key"):
        parse_config(_base(idcard={"baud": 9600}))


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"printer: unknown key"):
        parse_config(_base(printer={"port": "/dev/x"}))


def test_out_of_range_value_is_named_with_the_value() -> None:
    with pytest.raises(ConfigError, match=r"idcard\.poll_interval_ms: .*300.*got 100"):
        parse_config(_base(idcard={"poll_interval_ms": 100}))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_base(idcard={"baudrate": 1}, scanner={"max_length": 0, "colour": "red"}))
    message = str(info.value)
    for key in ("idcard.baudrate", "scanner.max_length", "scanner.colour"):
        assert key in message


def test_missing_required_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"device\.kind: required key is missing"):
        parse_config({"device": {"id": "k"}})


def test_backend_must_be_one_of_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"scanner\.backend"):
        parse_config(_base(scanner={"backend": "usb-hid"}))


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\nid = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_config_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_config({})


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(["device", "idcard", "pcsc", "scanner", "other"]),
        st.dictionaries(st.text(max_size=12), _values, max_size=4),
        max_size=4,
    )
)
def test_arbitrary_documents_validate_or_raise_config_error(data: dict[str, Any]) -> None:
    try:
        cfg = parse_config(data)
    except ConfigError as err:
        assert "invalid configuration" in str(err)
    else:
        assert cfg.device.kind in ("kiosk", "locker")


@pytest.mark.parametrize(
    ("locks", "message"),
    [
        ({"relay_pins": [17, 27], "door_pins": [5]}, "one of each per lock"),
        ({"relay_pins": [17]}, "one of each per lock"),
        ({"relay_pins": [17, 17], "door_pins": [5, 6]}, "a pin is used twice"),
        ({"relay_pins": [17], "door_pins": [17]}, "a pin is used twice"),
        ({"relay_pins": [28], "door_pins": [5]}, "locks.relay_pins.0"),
        ({"boards": [1, 1]}, "board address is listed twice"),
        ({"pulse_ms": 5000}, "locks.pulse_ms"),
    ],
)
def test_impossible_lock_wiring_is_refused_naming_the_key(
    locks: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(_base(locks=locks))
    assert "locks" in str(caught.value)


def test_lock_wiring_loads_with_one_relay_and_one_door_pin_per_lock() -> None:
    cfg = parse_config(_base(locks={"backend": "gpio", "relay_pins": [17], "door_pins": [5]}))
    assert (cfg.locks.backend, cfg.locks.relay_pins, cfg.locks.door_pins) == ("gpio", [17], [5])
    assert cfg.locks.pulse_ms == 200 and cfg.locks.relay_active_low
