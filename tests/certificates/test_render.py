"""Rendering: every template gives a one-page A4 PDF with the resident, the community, an embedded
CJK font and a QR that decodes (from the rendered page) to a credential that verifies."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pypdf
import pytest
from PIL import Image

from device.config import CertificateSection
from device.credential import BadSignatureError, SigningKey, generate_signing_key, verify
from device.idcard.identity import Identity
from hardware_sim.idcards import sample_card
from kiosk_ui.certificates import (
    CertificateDataError,
    FontNotFoundError,
    LayoutError,
    MissingFieldError,
    PreviewError,
    get_template,
    load_templates,
    render_certificate,
    render_page,
)
from kiosk_ui.certificates.fonts import find_cjk_font
from kiosk_ui.certificates.render import content_digest

from .conftest import COMMUNITY, NOON, TODAY, embedded_font_files, page_count, pdf_text, qr_codes

TEMPLATES = sorted(load_templates())


def render(
    name: str,
    identity: Identity,
    household: dict[str, Any],
    key: SigningKey,
    config: CertificateSection,
    **kwargs: Any,
) -> Any:
    return render_certificate(
        get_template(name), identity, household, config=config, key=key, today=TODAY, **kwargs
    )


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("card", [0, 7])
def test_every_template_renders_a_verifiable_page(
    name: str,
    card: int,
    household: dict[str, Any],
    signing_key: SigningKey,
    config: CertificateSection,
) -> None:
    identity = sample_card(card)
    rendered = render(name, identity, household, signing_key, config, now=NOON)
    assert rendered.pdf.startswith(b"%PDF-")
    assert page_count(rendered.pdf) == 1
    text = pdf_text(rendered.pdf)
    assert identity.name in text
    assert COMMUNITY in text
    assert rendered.serial in text
    assert "2026年11月23日" in text
    assert any("WenQuanYi" in font for font in embedded_font_files(rendered.pdf))
    # What a phone or the server's scanner reads off the printed page:
    assert qr_codes(rendered.pdf) == [rendered.qr_text]
    claims = verify(
        rendered.qr_text, {signing_key.kid: signing_key.verify_key}, audience=None, now=NOON
    )
    assert claims.kind == "certificate"
    assert claims.sub == rendered.serial
    assert claims.template == name
    assert claims.iss == "kiosk-0001"
    assert claims.digest == rendered.digest


def test_the_page_is_a4(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    rendered = render("residence", sample_card(1), household, signing_key, config)
    box = pypdf.PdfReader(io.BytesIO(rendered.pdf)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)


def test_the_family_table_lists_every_member(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    text = pdf_text(
        render("family_relationship", sample_card(2), household, signing_key, config).pdf
    )
    for member in household["members"]:
        assert member["name"] in text
        assert member["relation"] in text
    assert "1978年11月30日" in text


def test_the_qr_never_carries_the_id_number(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    identity = sample_card(3)
    rendered = render("residence", identity, household, signing_key, config)
    import base45

    raw = base45.b45decode(rendered.qr_text[4:])
    assert identity.id_number.encode() not in raw
    assert identity.name.encode() not in raw
    assert identity.id_number in pdf_text(rendered.pdf)  # it is printed, of course


def test_the_digest_binds_the_printed_content(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    template = get_template("residence")
    rendered = render("residence", sample_card(4), household, signing_key, config)
    args = {
        "template": template,
        "serial": rendered.serial,
        "community": COMMUNITY,
        "today": TODAY,
        "salt": rendered.salt,
    }
    assert content_digest(fields=rendered.fields, **args) == rendered.digest
    altered = {**rendered.fields, "address": "北京市朝阳区别处1号"}
    assert content_digest(fields=altered, **args) != rendered.digest


def test_serials_are_unique_and_name_issuer_and_date(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    serials = {
        render("residence", sample_card(0), household, signing_key, config).serial
        for _ in range(20)
    }
    assert len(serials) == 20
    assert all(s.startswith("kiosk-0001-20261123-") for s in serials)


def test_a_qr_signed_by_another_key_is_refused(
    household: dict[str, Any], config: CertificateSection
) -> None:
    kiosk = generate_signing_key("kiosk-0001")
    forger = generate_signing_key("kiosk-0001")
    rendered = render("residence", sample_card(0), household, forger, config)
    with pytest.raises(BadSignatureError):
        verify(rendered.qr_text, {kiosk.kid: kiosk.verify_key}, audience=None, now=NOON)


def test_missing_address_names_the_field_and_template(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    del household["address"]
    del household["residence_since"]
    with pytest.raises(MissingFieldError) as info:
        render("residence", sample_card(0), household, signing_key, config)
    message = str(info.value)
    assert "居住证明 (residence)" in message
    assert "现居住地址 [household: address]" in message
    assert "居住起始日期 [household: residence_since]" in message
    assert "no certificate was produced" in message
    assert info.value.template == "residence"
    assert len(info.value.missing) == 2


def test_missing_data_in_table_rows_is_named_by_row(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    del household["members"][1]["relation"]
    with pytest.raises(MissingFieldError, match=r"与本人关系 of row 2 \[members\[2\]\.relation\]"):
        render("family_relationship", sample_card(0), household, signing_key, config)
    household["members"] = []
    with pytest.raises(MissingFieldError, match=r"家庭成员 \[household: members\]"):
        render("family_relationship", sample_card(0), household, signing_key, config)


def test_optional_fields_may_be_absent(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    del household["phone"]
    del household["elderly"]
    rendered = render("elderly_subsidy", sample_card(5), household, signing_key, config)
    assert rendered.fields["phone"] == ""
    assert "13800000000" not in pdf_text(rendered.pdf)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"residence_since": "last spring"}, r"居住起始日期 .*expected a date"),
        ({"address": {"street": "x"}}, r"现居住地址 .*expected text, got dict"),
        ({"address": True}, r"expected text, got bool"),
    ],
)
def test_unusable_values_are_typed_errors(
    household: dict[str, Any],
    signing_key: SigningKey,
    config: CertificateSection,
    change: dict[str, Any],
    expected: str,
) -> None:
    household.update(change)
    with pytest.raises(CertificateDataError, match=expected):
        render("residence", sample_card(0), household, signing_key, config)


def test_a_household_that_is_not_an_object_is_a_typed_error(
    signing_key: SigningKey, config: CertificateSection
) -> None:
    with pytest.raises(CertificateDataError, match="not a JSON object"):
        render("residence", sample_card(0), ["garbage"], signing_key, config)  # type: ignore[arg-type]


def test_text_that_does_not_fit_its_box_is_a_layout_error(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    household["address"] = "很长的地址" * 60
    with pytest.raises(LayoutError, match=r"elderly_subsidy.toml blocks\[\d+\] \(cell\)"):
        render("elderly_subsidy", sample_card(0), household, signing_key, config)


def test_too_many_table_rows_is_a_layout_error(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    household["members"] = [{"name": f"成员{i}", "relation": "亲属"} for i in range(11)]
    with pytest.raises(LayoutError, match="11 rows, the template has room for 10"):
        render("family_relationship", sample_card(0), household, signing_key, config)


def test_a_missing_font_file_is_a_clear_error(
    household: dict[str, Any], signing_key: SigningKey, tmp_path: Path
) -> None:
    config = CertificateSection(font=str(tmp_path / "missing.ttf"))
    with pytest.raises(FontNotFoundError, match=r"missing\.ttf"):
        render("residence", sample_card(0), household, signing_key, config)
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    with pytest.raises(FontNotFoundError, match="not a usable TrueType font"):
        render(
            "residence",
            sample_card(0),
            household,
            signing_key,
            CertificateSection(font=str(broken)),
        )


def test_no_cjk_font_through_fontconfig_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A real fontconfig with no font directories: what a machine without CJK fonts looks like.
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        f'<?xml version="1.0"?><fontconfig><cachedir>{tmp_path}/cache</cachedir></fontconfig>'
    )
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    with pytest.raises(FontNotFoundError, match="apt install fonts-wqy-microhei"):
        find_cjk_font()


def test_fontconfig_finds_wenquanyi() -> None:
    assert find_cjk_font().name == "wqy-microhei.ttc"


def test_the_font_can_be_chosen_in_the_config(
    household: dict[str, Any], signing_key: SigningKey
) -> None:
    font = find_cjk_font()
    rendered = render(
        "residence",
        sample_card(0),
        household,
        signing_key,
        CertificateSection(font=str(font), community="另一个社区"),
    )
    assert "另一个社区" in pdf_text(rendered.pdf)


def test_preview_is_a_png_of_the_page(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    rendered = render("residence", sample_card(0), household, signing_key, config)
    png = render_page(rendered.pdf, width_px=600)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.width == 600
    assert abs(image.height - 600 * 297 / 210) <= 1
    # Not blank: the text and the QR are dark pixels.
    assert image.convert("L").getextrema()[0] < 50


@pytest.mark.parametrize("data", [b"", b"garbage", b"%PDF-1.4\n garbage", bytes(range(256))])
def test_preview_of_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(PreviewError):
        render_page(data)


def test_repr_of_a_rendered_certificate_leaks_nothing(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    identity = sample_card(0)
    rendered = render("residence", identity, household, signing_key, config)
    assert identity.name not in repr(rendered)
    assert identity.id_number not in repr(rendered)


def test_the_configured_key_signs_with_the_device_id_as_kid(
    household: dict[str, Any], signing_key: SigningKey, tmp_path: Path
) -> None:
    from device.credential import save_signing_key
    from kiosk_ui.certificates import load_certificate_key

    pem = tmp_path / "device.pem"
    save_signing_key(signing_key, pem)
    config = CertificateSection(signing_key=str(pem))
    key = load_certificate_key(config, "kiosk-0042")
    assert key.kid == "kiosk-0042"
    assert (
        load_certificate_key(config.model_copy(update={"key_id": "k1"}), "kiosk-0042").kid == "k1"
    )
    rendered = render("residence", sample_card(0), household, key, config)
    assert rendered.serial.startswith("kiosk-0042-20261123-")
    claims = verify(
        rendered.qr_text, {"kiosk-0042": signing_key.verify_key}, audience=None, now=NOON
    )
    assert claims.iss == "kiosk-0042"


def test_same_input_gives_the_same_bytes(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    # Ed25519 signatures are deterministic, and the PDF has no timestamp: golden files are possible.
    fixed = {"serial": "kiosk-0001-20261123-00000000", "salt": bytes(16), "now": NOON}
    first = render("residence", sample_card(0), household, signing_key, config, **fixed)
    again = render("residence", sample_card(0), household, signing_key, config, **fixed)
    assert first.pdf == again.pdf
    assert (
        first.qr_text
        != render(
            "residence",
            sample_card(0),
            household,
            signing_key,
            config,
            **{**fixed, "salt": b"\x01" * 16},
        ).qr_text
    )


def test_qr_is_valid_through_the_last_day_printed(
    household: dict[str, Any], signing_key: SigningKey, config: CertificateSection
) -> None:
    """The paper says 有效期至 X; the QR must verify all of day X (China time) and not after."""
    import datetime as dt

    from device.credential import ExpiredCredentialError, verify_certificate
    from kiosk_ui.certificates.fields import chinese_date
    from kiosk_ui.certificates.render import CHINA_TZ

    rendered = render("residence", sample_card(0), household, signing_key, config, now=NOON)
    last = TODAY + dt.timedelta(days=rendered.template.validity_days)
    assert f"有效期至：{chinese_date(last)}" in pdf_text(rendered.pdf).replace(" ", "")
    keys = {signing_key.kid: signing_key.verify_key}
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), CHINA_TZ).timestamp()
    verify_certificate(rendered.qr_text, keys, now=end - 60)  # 23:59 on the last day: valid
    with pytest.raises(ExpiredCredentialError):
        verify_certificate(rendered.qr_text, keys, now=end + 1)
