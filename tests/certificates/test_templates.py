"""Template files: the shipped ones load; a bad one fails with the file and the field named."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk_ui.certificates import TemplateError, get_template, load_template, load_templates
from kiosk_ui.certificates.template import BUILTIN_DIR, parse_template

MINIMAL = """
name = "{name}"
title = "测试证明"

[fields.name]
source = "card"
label = "姓名"

[fields.address]
source = "household"
label = "住址"

[[blocks]]
type = "paragraph"
x = 25
y = 60
width = 160
text = "兹证明{{name}}住在{{address}}。"
"""


def write(tmp_path: Path, text: str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_templates_include_residence_and_three_more() -> None:
    templates = load_templates()
    assert {"residence", "family_relationship", "elderly_subsidy", "difficulty"} <= set(templates)
    assert templates["residence"].title == "居住证明"
    for template in templates.values():
        assert template.fields["name"].source == "card"
        assert Path(template.path).parent == BUILTIN_DIR


def test_a_community_adds_a_template_without_code(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(name="custom"))
    templates = load_templates(tmp_path)
    assert templates["custom"].title == "测试证明"
    assert "residence" in templates
    assert get_template("custom", tmp_path).fields["address"].required


def test_a_community_template_overrides_a_builtin_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(name="residence"), name="residence")
    assert get_template("residence", tmp_path).title == "测试证明"


def test_unknown_template_lists_the_available_ones() -> None:
    with pytest.raises(
        TemplateError, match=r"unknown certificate template 'nope'; available: .*residence"
    ):
        get_template("nope")


def test_missing_templates_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="templates_dir is not a directory"):
        load_templates(tmp_path / "absent")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('source = "household"', 'source = "registry"', r"fields\.address\.source"),
        (
            '[fields.name]\nsource = "card"',
            '[fields.name]\nsource = "card"\nkey = "shoe_size"',
            r"fields\.name: card has no value 'shoe_size'",
        ),
        ("{address}", "{adress}", r"blocks\[0\] \(paragraph\): placeholder \{adress\}"),
        ("{address}", "{address:>10}", r"blocks\[0\].*placeholder \{address\}"),
        ("{address}。", "{address。", r"blocks\[0\]"),
        ('label = "住址"', 'label = "住址"\ntype = "list"', r"list field \{address\}"),
        ('label = "住址"', 'lable = "住址"', r"fields\.address\.lable: unknown key"),
        ('type = "paragraph"', 'type = "poem"', r"blocks\.0"),
        ("x = 25", "x = 250", r"blocks\.0\.paragraph\.x"),
        (
            '[fields.name]\nsource = "card"',
            '[fields.name]\nsource = "kiosk"',
            r"fields\.name: kiosk has no value 'name'",
        ),
        (
            'source = "household"',
            'source = "household"\nkey = "a..b"',
            r"fields\.address: household key",
        ),
    ],
)
def test_bad_templates_name_the_file_and_the_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = MINIMAL.format(name="custom")
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(TemplateError, match=expected) as info:
        load_template(path)
    assert str(path) in str(info.value)


def test_table_rows_must_name_a_list_field(tmp_path: Path) -> None:
    text = (
        MINIMAL.format(name="custom")
        + """
[[blocks]]
type = "table"
x = 20
y = 100
rows = "address"
columns = [{ title = "姓名", key = "name", width = 40 }]
"""
    )
    with pytest.raises(TemplateError, match=r"blocks\[1\] \(table\): rows = 'address'"):
        load_template(write(tmp_path, text))


def test_name_must_match_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.format(name="other"), name="custom")
    with pytest.raises(TemplateError, match=r"must match the file name \(custom\.toml\)"):
        load_template(path)


def test_files_that_are_not_toml_are_template_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "name = [unclosed")
    with pytest.raises(TemplateError, match="not valid TOML"):
        load_template(path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TemplateError, match=r"binary\.toml"):
        load_template(binary)
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "absent.toml")


def _builtin(name: str) -> dict[str, Any]:
    with (BUILTIN_DIR / f"{name}.toml").open("rb") as fh:
        return tomllib.load(fh)


toml_values = st.recursive(
    st.none().map(lambda _: "") | st.booleans() | st.integers(-300, 300) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10), toml_values, max_size=6))
def test_random_documents_are_template_errors_never_crashes(data: dict[str, Any]) -> None:
    try:
        parse_template(data, "random.toml")
    except TemplateError as err:
        assert "random.toml" in str(err)


@given(
    st.sampled_from(["residence", "difficulty", "elderly_subsidy", "family_relationship"]),
    st.text(max_size=8),
    toml_values,
)
def test_one_changed_key_in_a_real_template_never_crashes(name: str, key: str, value: Any) -> None:
    data = _builtin(name)
    data[key or "title"] = value
    try:
        parse_template(data, f"{name}.toml")
    except TemplateError as err:
        assert f"{name}.toml" in str(err)


@given(st.binary(max_size=200))
def test_random_file_bytes_are_template_errors(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.toml"
        path.write_bytes(data)
        with pytest.raises(TemplateError, match=r"random\.toml"):
            load_template(path)
