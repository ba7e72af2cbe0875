"""The message catalogue and recipient masking: pure functions, no I/O."""

from __future__ import annotations

import re

import pytest

from sync_server.notify import (
    TEMPLATES,
    TemplateParamsError,
    UnknownTemplateError,
    mask_recipient,
    normalize_mobile,
    render,
)
from sync_server.notify.masking import scrub

CJK = re.compile(r"[\u4e00-\u9fff]")
REQUIRED = {
    "case.result_ready",
    "case.deposited",
    "case.assigned",
    "case.escalated",
    "case.overdue",
    "subsidy.reminder",
    "notice.published",
}


def sample(name: str) -> dict[str, str]:
    return {p: f"<{p}>" for p in TEMPLATES[name].params}


def test_catalogue_has_every_message_the_flows_need() -> None:
    assert set(TEMPLATES) >= REQUIRED


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_template_uses_exactly_its_params_and_is_chinese(name: str) -> None:
    template = TEMPLATES[name]
    assert template.placeholders() == set(template.params)
    text = render(name, sample(name))
    assert CJK.search(text)
    for param in template.params:
        assert f"<{param}>" in text
    assert "{" not in text


def test_result_ready_names_service_locker_and_link() -> None:
    text = render(
        "case.result_ready",
        {
            "service": "高龄津贴申领",
            "locker": "幸福里3号柜",
            "case_no": "C20240001",
            "link": "https://linli.example.cn/c/Ab3",
        },
    )
    assert "高龄津贴申领" in text
    assert "C20240001" in text
    assert "幸福里3号柜" in text
    assert text.endswith("https://linli.example.cn/c/Ab3")


def test_subsidy_reminder_is_the_elderly_subsidy_certification() -> None:
    text = render("subsidy.reminder", {"deadline": "6月30日", "place": "社区服务中心"})
    assert "高龄" in text
    assert "认证" in text
    assert "6月30日" in text


def test_missing_params_are_named() -> None:
    with pytest.raises(TemplateParamsError) as err:
        render("case.result_ready", {"service": "x"})
    assert err.value.missing == ("case_no", "link", "locker")
    assert "case.result_ready" in str(err.value)
    assert "missing case_no, link, locker" in str(err.value)


def test_unknown_and_non_scalar_params_are_named() -> None:
    params: dict[str, object] = {
        "deadline": ["6月30日"],
        "place": None,
        "plcae": "typo",
    }
    with pytest.raises(TemplateParamsError) as err:
        render("subsidy.reminder", params)
    assert err.value.unknown == ("plcae",)
    assert err.value.bad_values == ("deadline", "place")
    assert err.value.missing == ()


def test_booleans_and_very_long_values_are_refused() -> None:
    with pytest.raises(TemplateParamsError) as err:
        render("notice.published", {"community": True, "title": "长" * 300})
    assert err.value.bad_values == ("community", "title")


def test_numbers_render_as_text() -> None:
    assert "办件12345" in render(
        "case.overdue", {"case_no": 12345, "service": "s", "deadline": "今天"}
    )


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTemplateError, match=r"case\.result_ready") as err:
        render("case.ready", {})
    assert isinstance(err.value, LookupError)


@pytest.mark.parametrize(
    ("given", "mobile"),
    [
        ("13812345678", "13812345678"),
        ("+8613812345678", "13812345678"),
        ("8613812345678", "13812345678"),
        ("+86 138-1234-5678", "13812345678"),
        ("19912345678", "19912345678"),
    ],
)
def test_mainland_mobiles_are_normalized(given: str, mobile: str) -> None:
    assert normalize_mobile(given) == mobile
    assert mask_recipient(given) == mobile[:3] + "****" + mobile[-4:]


@pytest.mark.parametrize(
    "given",
    ["1381234567", "138123456789", "12812345678", "02188886666", "+4413812345678", "1381234567a"],
)
def test_other_numbers_are_not_mobiles(given: str) -> None:
    assert normalize_mobile(given) is None


def test_openids_and_short_strings_are_masked() -> None:
    openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    masked = mask_recipient(openid)
    assert masked == "oU***6o"
    assert "MuAJO" not in masked
    assert mask_recipient("abc") == "***"


def test_scrub_masks_echoed_numbers() -> None:
    text = "invalid mobile 13812345678 (+8613912345678) for oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    cleaned = scrub(text, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    assert "13812345678" not in cleaned
    assert "13912345678" not in cleaned
    assert "138****5678" in cleaned
    assert "MuAJO" not in cleaned
