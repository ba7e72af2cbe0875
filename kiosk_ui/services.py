"""The kiosk's offline services: the service guide, community notices, elderly-subsidy status, a
household summary and the check of a scanned certificate QR; and :class:`KioskServices`, what a
session is given.

Everything here reads the local store (documents the sync agent keeps current, docs/documents.md)
or the resident's household record, so it works offline. Items from the server are read
defensively: a document item of an unexpected shape is skipped with a warning, never a crash on
the resident's screen.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from device.credential import (
    BadSignatureError,
    CredentialError,
    ExpiredCredentialError,
    NotACertificateError,
    NotYetValidError,
    RevokedCredentialError,
    UnknownKeyError,
    VerifyKey,
    verify_certificate,
)
from device.idcard.identity import Identity
from device.store import Store
from kiosk_ui.certificates.fields import age_on, chinese_date
from kiosk_ui.certificates.render import CHINA_TZ
from kiosk_ui.issuing import HouseholdDirectory
from kiosk_ui.online import OnlineApplications, OnlineResidents
from kiosk_ui.printing import CertificateService

log = logging.getLogger(__name__)


def china_date(timestamp: float) -> dt.date:
    """The calendar date in China of a Unix time (certificates, notices and cards use it)."""
    return dt.datetime.fromtimestamp(timestamp, CHINA_TZ).date()


@dataclass(frozen=True)
class Entry:
    """One line of a list screen and what its detail screen says."""

    key: str
    title: str
    summary: str
    body: str


# -- the service guide (办事指南): the ``catalogue`` document ---
class ServiceGuide:
    """The services the community offers, from the ``catalogue`` document (the lockers' services).

    An item is ``{"name", "description", "documents": [...], "pickup_hours", "process_hours"}``
    (sync_server/catalogue.py).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def entries(self) -> list[Entry]:
        found = []
        for key, item in self._store.documents.items("catalogue"):
            entry = self._entry(key, item)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: e.title)
        return found

    def entry(self, key: str) -> Entry | None:
        return next((e for e in self.entries() if e.key == key), None)

    @staticmethod
    def _entry(key: str, item: Any) -> Entry | None:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            log.warning("catalogue item %s skipped: no name", key)
            return None
        description = str(item.get("description") or "")
        documents = [str(d) for d in item.get("documents") or [] if isinstance(d, str | int)]
        lines = [description] if description else []
        if documents:
            lines.append("需要准备的材料：")
            lines += [f"{n}. {d}" for n, d in enumerate(documents, 1)]
        else:
            lines.append("不需要准备材料。")
        hours = item.get("process_hours")
        if isinstance(hours, int | float) and hours > 0:
            lines.append(f"办理时限：约{_hours(float(hours))}。")
        lines.append("可在社区云柜投递材料办理，也可到社区居委会窗口办理。")
        return Entry(key, item["name"], description, "\n".join(lines))


def _hours(hours: float) -> str:
    if hours >= 24 and hours % 24 == 0:
        return f"{int(hours // 24)}天"
    return f"{hours:g}小时"


# -- community notices: the ``notices`` document ------------
class NoticeBoard:
    """Current notices for this kiosk's community and for every community.

    An item is ``{"title", "body", "community" (area id or None), "community_name", "valid_until",
    "published_at"}`` (sync_server/web/admin_content.py). ``community_id`` None shows every
    community's notices (a kiosk that does not know its community).
    """

    def __init__(self, store: Store, *, community_id: str | None = None) -> None:
        self._store = store
        self.community_id = community_id

    def entries(self, now: float) -> list[Entry]:
        """Notices still valid at ``now``, newest first."""
        found: list[tuple[float, Entry]] = []
        for key, item in self._store.documents.items("notices"):
            if not isinstance(item, Mapping) or not isinstance(item.get("title"), str):
                log.warning("notice %s skipped: no title", key)
                continue
            until = item.get("valid_until")
            if isinstance(until, int | float) and until <= now:
                continue
            community = item.get("community")
            if community is not None and self.community_id not in (None, community):
                continue
            body = str(item.get("body") or "")
            published = item.get("published_at")
            when = float(published) if isinstance(published, int | float) else 0.0
            dated = f"{chinese_date(china_date(when))}发布" if when else ""
            summary = body if len(body) <= 40 else body[:40] + "……"
            found.append(
                (
                    when,
                    Entry(
                        key,
                        item["title"],
                        summary,
                        "\n".join(part for part in (body, dated) if part),
                    ),
                )
            )
        found.sort(key=lambda pair: -pair[0])
        return [entry for _, entry in found]

    def entry(self, key: str, now: float) -> Entry | None:
        return next((e for e in self.entries(now) if e.key == key), None)


# -- status from the household record -----------------------
@dataclass(frozen=True)
class StatusLine:
    """One answer of the status screen; ``done`` None when the kiosk cannot tell."""

    title: str
    text: str
    done: bool | None = None


class SubsidyStatus:
    """Elderly-subsidy certification (高龄补贴认证) from the household record.

    The record's ``subsidy_year`` is the last year the resident was certified: an int, or None
    (never). A record without the key (records published before the server added it) is not
    guessed at: the screen says the kiosk has no certification data. ``deadline`` is this
    year's date to certify by, shown to those not yet certified: a date, or a (month, day)
    that recurs every year (``[kiosk] subsidy_deadline``).
    """

    TITLE = "高龄补贴认证"

    def __init__(
        self, *, min_age: int = 80, deadline: dt.date | tuple[int, int] | None = None
    ) -> None:
        self.min_age = min_age
        self.deadline = deadline

    def status(
        self, identity: Identity, household: Mapping[str, Any], today: dt.date
    ) -> StatusLine:
        if age_on(identity.birth, today) < self.min_age:
            return StatusLine(self.TITLE, f"您未满{self.min_age}周岁，不需要办理高龄补贴认证。")
        if "subsidy_year" not in household:
            return StatusLine(self.TITLE, "本机档案中没有您的认证记录，请到社区居委会查询。")
        year = household["subsidy_year"]
        if isinstance(year, int) and year >= today.year:
            return StatusLine(self.TITLE, f"已认证 {year}年度", True)
        deadline = self.deadline
        if isinstance(deadline, tuple):
            deadline = dt.date(today.year, *deadline)
        when = f"请于{chinese_date(deadline)}前" if deadline else "请尽快"
        last = f"上次认证：{year}年度。" if isinstance(year, int) else "您还没有认证记录。"
        return StatusLine(
            self.TITLE,
            f"未认证：{today.year}年度尚未认证，{when}到社区居委会或本机所在服务点完成认证。{last}",
            False,
        )


def household_summary(household: Mapping[str, Any]) -> StatusLine:
    """What the kiosk's record says (address, since when, members), for the resident to check."""
    lines = []
    if isinstance(household.get("address"), str):
        lines.append(f"户籍地址：{household['address']}")
    since = household.get("residence_since")
    if isinstance(since, str):
        try:
            lines.append(f"居住起始：{chinese_date(dt.date.fromisoformat(since))}")
        except ValueError:
            lines.append(f"居住起始：{since}")
    members = household.get("members")
    if isinstance(members, list):
        lines.append(f"家庭成员：{len(members)}人")
    lines.append("如有不符，请到社区居委会更正。")
    return StatusLine("本机档案信息", "\n".join(lines))


# -- a scanned certificate QR -------------------------------
class CertificateChecker:
    """Checks a scanned verification QR (``LQ1:...``) against the keys this kiosk knows."""

    PREFIX = "LQ1:"

    def __init__(self, keys: Mapping[str, VerifyKey], titles: Mapping[str, str]) -> None:
        self._keys = dict(keys)
        self._titles = dict(titles)

    def check(self, text: str, now: float) -> tuple[str, str]:
        """``(title, body)`` for the screen."""
        try:
            claims = verify_certificate(text, self._keys, now=now)
        except UnknownKeyError:
            return "不是本机出具的证明", "本机只能核验自己出具的证明；请用社区网站的核验页面核验。"
        except (ExpiredCredentialError, NotYetValidError, RevokedCredentialError) as err:
            return "证明已失效", _refusal(err)
        except (BadSignatureError, NotACertificateError, CredentialError) as err:
            log.info("scanned certificate refused: %s", type(err).__name__)
            return "无法核验", "这个二维码不是有效的证明二维码。"
        title = self._titles.get(claims.template or "", claims.template or "证明")
        return (
            "证明有效",
            f"{title}\n证明编号：{claims.sub}\n出具日期：{chinese_date(china_date(claims.nbf))}\n"
            f"有效期至：{chinese_date(china_date(claims.exp - 1))}\n请核对纸面上的编号和内容。",
        )


def _refusal(err: CredentialError) -> str:
    if isinstance(err, RevokedCredentialError):
        return "这份证明已被撤销。"
    if isinstance(err, NotYetValidError):
        return "这份证明还未生效。"
    return "这份证明已过有效期，请重新开具。"


# -- what a session is given --------------------------------
@dataclass
class KioskServices:
    """The session's collaborators; each is small so tests can give real ones.

    ``households`` is the local cache (``ResidentCache``); ``online_residents`` asks the server
    for the others. ``online()`` says whether the sync agent is connected (``agent.connected``).
    """

    households: HouseholdDirectory
    certificates: CertificateService
    guide: ServiceGuide
    notices: NoticeBoard
    online: Callable[[], bool]
    online_residents: OnlineResidents
    applications: OnlineApplications
    subsidy: SubsidyStatus
    checker: CertificateChecker | None = None
