"""Case tests run on SQLite and on a private PostgreSQL (the fixtures of tests/server)."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine

from sync_server.sitedata import load_site_data
from tests.server.conftest import backend, engine, migrated_url  # noqa: F401

NOW = 1_800_000_000.0

SITE: dict[str, Any] = {
    "areas": [
        {"id": "st1", "name": "东湖街道", "level": "street"},
        {"id": "c1", "name": "幸福社区", "level": "community", "parent": "st1"},
        {"id": "g1", "name": "第一网格", "level": "grid", "parent": "c1"},
        {"id": "g2", "name": "第二网格", "level": "grid", "parent": "c1"},
    ],
    "services": [
        {
            "id": "residence",
            "name": "居住证明",
            "documents": [{"name": "户口簿复印件", "copies": 1}],
            "pickup_hours": 4,
            "process_hours": 48,
        },
        {"id": "retired", "name": "停办业务", "active": False},
    ],
    "points": [
        {"device": "locker-1", "kind": "locker", "name": "幸福社区1号柜", "area": "g1",
         "lat": 30.50, "lon": 114.30},
        {"device": "locker-2", "kind": "locker", "name": "幸福社区2号柜", "area": "g2",
         "lat": 30.51, "lon": 114.31},
        {"device": "kiosk-1", "kind": "kiosk", "name": "社区一体机", "area": "c1"},
    ],
    "workers": [
        {"username": "wang", "name": "王网格", "password_hash": "x", "grids": ["g1"],
         "home_lat": 30.50, "home_lon": 114.29,
         "shifts": [{"start": NOW - 3600, "end": NOW + 8 * 3600}]},
        {"username": "li", "name": "李网格", "password_hash": "x", "grids": ["g1", "g2"],
         "home_lat": 30.52, "home_lon": 114.30,
         "shifts": [{"start": NOW - 3600, "end": NOW + 8 * 3600}]},
        {"username": "zhao", "name": "赵主任", "role": "staff", "area": "c1",
         "password_hash": "x"},
    ],
}  # fmt: skip


@pytest.fixture
def site(engine: Engine) -> Engine:  # noqa: F811
    """``engine`` with the small site above loaded (fast hashes: the hasher is not under test)."""
    load_site_data(
        engine,
        SITE,
        clock=lambda: NOW,
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    return engine
