"""Fixtures of the online applications tests: the small site of tests/cases on SQLite and on a
private PostgreSQL (the fixtures of tests/server), residents in its community ``c1``, a kiosk and a
locker named like the test broker's devices, office accounts, and the web app with a notification
service whose ``sms`` adapter is the recording one (the codes a resident would get are read from
it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from device.credential import generate_signing_key
from sync_server.domain_models import Household, Resident
from sync_server.notify import NotificationService, RecordingNotifier
from sync_server.sitedata import load_site_data
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from tests.cases.conftest import NOW, site  # noqa: F401
from tests.records.conftest import make_id
from tests.server.conftest import backend, engine, migrated_url  # noqa: F401
from tests.web.conftest import RecordingSender

WANG = make_id("19450312", 1)  # 王伟, head of household H1 in c1
LI = make_id("19400229", 3, male=False)  # 李芳, the same household
ZHAO = make_id("19900101", 6)  # 赵敏, elsewhere (c2)
UNKNOWN = make_id("19300101", 99)  # not in the records
PHONE = "13800138000"
PASSWORD = "correct horse battery"


class Clock:
    """A clock the tests move (code expiry, rate limits) instead of sleeping."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def town(site: Engine) -> Engine:  # noqa: F811
    """``site`` plus community c2, residents, the test broker's kiosk (dev-a, also kiosk-2
    revoked) and locker (dev-b), and an administrator and a staff member of each community."""
    load_site_data(
        site,
        {
            "areas": [{"id": "c2", "name": "和平社区", "level": "community", "parent": "st1"}],
            "points": [
                {"device": "dev-a", "kind": "kiosk", "name": "社区服务机", "area": "c1"},
                {"device": "kiosk-2", "kind": "kiosk", "name": "旧服务机", "area": "c2"},
                {"device": "dev-b", "kind": "locker", "name": "幸福社区3号柜", "area": "g1"},
            ],
            "workers": [
                {"username": "root", "name": "管理员", "role": "admin", "password": PASSWORD},
                {"username": "zhou", "name": "周主任", "role": "staff", "area": "c1",
                 "password": PASSWORD},
                {"username": "sun", "name": "孙主任", "role": "staff", "area": "c2",
                 "password": PASSWORD},
            ],
        },
        clock=lambda: NOW,
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )  # fmt: skip
    with site.begin() as conn:
        conn.execute(
            insert(Household),
            [
                {"id": "H1", "community_id": "c1", "address": "幸福路1号", "extra": {},
                 "updated": NOW},
                {"id": "H2", "community_id": "c2", "address": "和平路2号", "extra": {},
                 "updated": NOW},
            ],
        )  # fmt: skip
        conn.execute(
            insert(Resident),
            [
                {"id_number": WANG, "household_id": "H1", "community_id": "c1", "name": "王伟",
                 "birth_date": "1945-03-12", "relation": "户主", "extra": {}, "updated": NOW},
                {"id_number": LI, "household_id": "H1", "community_id": "c1", "name": "李芳",
                 "birth_date": "1940-02-29", "relation": "配偶", "extra": {}, "updated": NOW},
                {"id_number": ZHAO, "household_id": "H2", "community_id": "c2", "name": "赵敏",
                 "birth_date": "1990-01-01", "relation": "户主", "extra": {}, "updated": NOW},
            ],
        )  # fmt: skip
    return site


@pytest.fixture
def sms() -> RecordingNotifier:
    return RecordingNotifier("sms")


@pytest.fixture
def notifications(town: Engine, sms: RecordingNotifier) -> Iterator[NotificationService]:
    service = NotificationService(town, {"sms": sms})
    yield service
    service.close()


@pytest.fixture
def client(town: Engine, clock: Clock, notifications: NotificationService) -> Iterator[TestClient]:
    app = create_app(
        WebContext(
            engine=town,
            signing_key=generate_signing_key("srv-1"),
            send_command=RecordingSender(),
            clock=clock,
            extra={"notifications": notifications},
        )
    )
    with TestClient(app, base_url="http://linli.test") as c:
        yield c


def last_code(sms: RecordingNotifier, phone: str = PHONE) -> str:
    """The code in the newest SMS to ``phone``."""
    messages = [m for m in sms.recent if m.recipient == phone]
    assert messages, f"no SMS to {phone}"
    match = re.search(r"验证码(\d{6})", messages[-1].text)
    assert match, "the SMS carries no code"
    return match.group(1)
