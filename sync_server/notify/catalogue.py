"""The message catalogue: every notification the server sends, by name, in Simplified Chinese.

Callers name a template and give its params; :func:`render` refuses missing or unknown params
before anything is stored, so a typo in a caller fails its tests instead of texting a resident a
half-empty sentence. The SMS signature (【...】) is added by the SMS adapter, not here.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_server.notify.errors import TemplateParamsError, UnknownTemplateError

__all__ = ["TEMPLATES", "Template", "check_params", "get_template", "render"]

MAX_PARAM_CHARS = 256
"""One param value longer than this is a caller bug (an SMS is 70 characters a segment)."""


@dataclass(frozen=True)
class Template:
    """A named message: ``text`` with ``{param}`` placeholders; ``params`` lists them all (each is
    required); ``audience`` and ``when`` document who gets it and why (docs/notifications.md)."""

    name: str
    text: str
    params: tuple[str, ...]
    audience: str
    when: str

    def placeholders(self) -> set[str]:
        """The params ``text`` uses (the catalogue test checks they equal ``params``)."""
        return {field for _, field, _, _ in string.Formatter().parse(self.text) if field}


_ALL = (
    Template(
        "case.deposited",
        "您的「{service}」材料已投入{locker}，办件编号{case_no}。网格员取件后将尽快办理，"
        "办结后另行通知。",
        ("service", "locker", "case_no"),
        "resident",
        "the resident's documents are in a locker compartment (receipt)",
    ),
    Template(
        "case.result_ready",
        "您办理的「{service}」（办件编号{case_no}）已办结，结果已放入{locker}。"
        "请打开链接出示取件码开柜领取：{link}",
        ("service", "locker", "case_no", "link"),
        "resident",
        "the result is in a compartment; the link shows the collect credential",
    ),
    Template(
        "case.assigned",
        "新取件任务：请于{deadline}前到{locker}取走「{service}」材料，办件编号{case_no}。",
        ("service", "locker", "deadline", "case_no"),
        "worker",
        "a pickup was assigned to a grid worker",
    ),
    Template(
        "case.escalated",
        "办件{case_no}（{service}）已升级至{level}处理，原因：{reason}。请及时跟进。",
        ("case_no", "service", "level", "reason"),
        "staff",
        "a case was not picked up or processed in time and escalates to community/street staff",
    ),
    Template(
        "case.overdue",
        "办件{case_no}（{service}）已超过办理时限（{deadline}），请尽快处理。",
        ("case_no", "service", "deadline"),
        "worker or staff",
        "a case passed its deadline",
    ),
    Template(
        "case.reminder",
        "提醒：办件{case_no}（{service}）将于{deadline}到期，请及时处理。",
        ("case_no", "service", "deadline"),
        "worker",
        "a case the worker holds is due within the hour",
    ),
    Template(
        "case.collect_reminder",
        "您办理的「{service}」结果已在{locker}存放多日，请尽快凭短信中的链接取件。",
        ("service", "locker"),
        "resident",
        "the result has waited in the locker for days",
    ),
    Template(
        "locker.alarm",
        "{locker}第{compartment}号格口{problem}，请尽快到场查看处理。",
        ("locker", "compartment", "problem"),
        "worker",
        "a locker door stayed open too long, a lock failed, or an opening was dropped",
    ),
    Template(
        "subsidy.reminder",
        "高龄补贴认证提醒：请于{deadline}前完成本年度高龄津贴资格认证，可到{place}办理，"
        "逾期将暂停发放。",
        ("deadline", "place"),
        "resident",
        "the yearly elderly-subsidy certification is due",
    ),
    Template(
        "notice.published",
        "{community}发布新公告：《{title}》，详情请到社区服务机或居委会查看。",
        ("community", "title"),
        "resident",
        "the community published a notice",
    ),
)

TEMPLATES: Mapping[str, Template] = {t.name: t for t in _ALL}
"""Every template by name."""


def get_template(name: str) -> Template:
    """The template called ``name``, or :class:`UnknownTemplateError` listing the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UnknownTemplateError(
            f"no notification template {name!r}; known: {', '.join(sorted(TEMPLATES))}"
        ) from None


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, str]:
    """``params`` as strings, or :class:`TemplateParamsError` naming what is missing, unknown or
    not a plain value (bool, None, lists and over-long strings are refused)."""
    template = get_template(name)
    missing = set(template.params) - set(params)
    unknown = set(params) - set(template.params)
    bad = {
        key
        for key, value in params.items()
        if key in template.params
        and (
            isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or len(str(value)) > MAX_PARAM_CHARS
        )
    }
    if missing or unknown or bad:
        raise TemplateParamsError(name, missing=missing, unknown=unknown, bad_values=bad)
    return {key: str(params[key]) for key in template.params}


def render(name: str, params: Mapping[str, Any]) -> str:
    """The text of template ``name`` with ``params`` filled in (checked by :func:`check_params`)."""
    return get_template(name).text.format_map(check_params(name, params))
