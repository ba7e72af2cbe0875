"""The people and places of the virtual site: one street with two communities, a grid each, the
service catalogue, grid workers and an administrator, and the residents' household records (a
一户一档 spreadsheet imported as a community office would, then published to the kiosks).

Residents are the simulator's sample cards (:func:`hardware_sim.idcards.sample_card`): residents
0-7 live in 幸福社区 (the kiosks' community), 8-9 in 和平社区 (their records reach a kiosk only
through the online lookup), and 10 and above have no record anywhere.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

from device.idcard.identity import Identity
from hardware_sim.idcards import sample_card, validity

STREET, COMMUNITY, OTHER_COMMUNITY = "st1", "c1", "c2"
GRID, OTHER_GRID = "g1", "g2"
LOCAL_RESIDENTS = range(0, 8)
ELSEWHERE_RESIDENTS = range(8, 10)
WORKER_PASSWORD = "linli-sim-worker"  # noqa: S105 -- the simulated site's demo accounts
WORKERS = ("chen", "li")
WORKER_NAMES = {"chen": "陈网格", "li": "李网格"}
"""How the pages show each grid worker."""
ADMIN = "admin"
CSV_HEADERS = (
    "身份证号码",
    "姓名",
    "户号",
    "现住址",
    "居住起始日期",
    "与户主关系",
    "联系电话",
    "高龄补贴认证年度",
)


def resident(i: int) -> Identity:
    """The card of resident ``i``: the simulator's sample card ``i``, renewed in 2024 (sample
    cards are issued years ago, and an expired card is refused at the kiosk)."""
    card = sample_card(i)
    issued = dt.date(2024, 3, 1)
    return dataclasses.replace(card, valid_from=issued, valid_to=validity(card.birth, issued))


def resident_phone(i: int) -> str:
    """Resident ``i``'s mobile number (a 138 number, made up)."""
    return f"138{i:08d}"


def site_data(now: float | None = None) -> dict[str, Any]:
    """Areas, services and workers in the format of ``linli server load-site``."""
    now = time.time() if now is None else now
    shift = [{"start": now - 3600, "end": now + 24 * 3600}]
    return {
        "areas": [
            {"id": STREET, "name": "东湖街道", "level": "street"},
            {"id": COMMUNITY, "name": "幸福社区", "level": "community", "parent": STREET},
            {"id": GRID, "name": "幸福第一网格", "level": "grid", "parent": COMMUNITY},
            {"id": OTHER_COMMUNITY, "name": "和平社区", "level": "community", "parent": STREET},
            {"id": OTHER_GRID, "name": "和平第一网格", "level": "grid", "parent": OTHER_COMMUNITY},
        ],
        "services": [
            {"id": "residence", "name": "居住证明",
             "documents": [{"name": "户口簿复印件", "copies": 1}, {"name": "租房合同复印件"}],
             "pickup_hours": 4, "process_hours": 48},
            {"id": "subsidy", "name": "高龄津贴申领", "documents": [{"name": "身份证复印件"}],
             "pickup_hours": 8, "process_hours": 72},
        ],
        "workers": [
            {"username": "chen", "name": WORKER_NAMES["chen"], "password": WORKER_PASSWORD,
             "grids": [GRID], "phone": "13900001111", "home_lat": 30.505, "home_lon": 114.305,
             "shifts": shift},
            {"username": "li", "name": WORKER_NAMES["li"], "password": WORKER_PASSWORD,
             "grids": [GRID], "phone": "13900002222", "home_lat": 30.51, "home_lon": 114.31,
             "shifts": shift},
            {"username": ADMIN, "name": "管理员", "role": "admin", "password": WORKER_PASSWORD},
        ],
    }  # fmt: skip


def write_records(directory: Path) -> dict[str, Path]:
    """The communities' 一户一档 spreadsheets (CSV), two residents per household:
    ``{community: path}``."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for community, numbers in (
        (COMMUNITY, LOCAL_RESIDENTS),
        (OTHER_COMMUNITY, ELSEWHERE_RESIDENTS),
    ):
        path = directory / f"{community}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADERS)
            for i in numbers:
                card = resident(i)
                household = f"{community.upper()}-H{i // 2:03d}"
                street = "幸福路8号" if community == COMMUNITY else "和平街3号"
                address = f"{street}{i // 2 + 1}栋{100 + i // 2}室"
                since = f"{2010 + i % 10}-0{1 + i % 9}-15"
                relation = "户主" if i % 2 == 0 else "配偶"
                writer.writerow([card.id_number, card.name, household, address, since, relation,
                                 resident_phone(i), ""])  # fmt: skip
        out[community] = path
    return out
