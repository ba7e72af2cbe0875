"""Load a site's reference data (areas, services, service points, workers, shifts) from a mapping.

Used by ``linli server load-site FILE.toml``, by the virtual site and by tests. Loading is an
upsert in one transaction: run it again after editing the file and the rows follow; nothing is
deleted (retire a worker with ``active = false``, a service with ``active = false``). Passwords
in the file are hashed with argon2id before they are stored; ``password_hash`` may be given
instead, so the file need not hold clear passwords.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sync_server.domain_models import (
    AREA_LEVELS,
    DEVICE_KINDS,
    ROLES,
    Area,
    Service,
    ServicePoint,
    Shift,
    Worker,
    WorkerGrid,
)
from sync_server.errors import ServerError

__all__ = ["SiteData", "SiteDataError", "load_site_data"]


class SiteDataError(ServerError, ValueError):
    """The site data file is invalid; the message names the entry and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AreaData(_Model):
    id: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=128)
    level: str
    parent: str | None = None


class DocumentNeeded(_Model):
    name: str = Field(min_length=1, max_length=128)
    copies: int = Field(default=1, ge=1, le=20)
    note: str = ""


class ServiceData(_Model):
    id: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    documents: list[DocumentNeeded] = Field(default_factory=list)
    pickup_hours: float = Field(default=24.0, gt=0)
    process_hours: float = Field(default=72.0, gt=0)
    active: bool = True


class PointData(_Model):
    device: str = Field(min_length=1, max_length=64)
    kind: str
    name: str = Field(min_length=1, max_length=128)
    area: str
    address: str = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class ShiftData(_Model):
    start: float
    end: float


class WorkerData(_Model):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=64)
    role: str = "worker"
    password: str | None = Field(default=None, min_length=8)
    password_hash: str | None = None
    phone: str | None = None
    area: str | None = None
    grids: list[str] = Field(default_factory=list)
    home_lat: float | None = None
    home_lon: float | None = None
    speed_kmh: float = Field(default=15.0, gt=0, le=120)
    capacity: int = Field(default=5, ge=0, le=100)
    active: bool = True
    shifts: list[ShiftData] = Field(default_factory=list)


class SiteData(_Model):
    """The file's shape: ``[[areas]]``, ``[[services]]``, ``[[points]]``, ``[[workers]]``."""

    areas: list[AreaData] = Field(default_factory=list)
    services: list[ServiceData] = Field(default_factory=list)
    points: list[PointData] = Field(default_factory=list)
    workers: list[WorkerData] = Field(default_factory=list)


_areas = cast(Table, Area.__table__)
_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)
_workers = cast(Table, Worker.__table__)
_grids = cast(Table, WorkerGrid.__table__)
_shifts = cast(Table, Shift.__table__)


def _check(data: SiteData) -> None:
    levels = {a.id: a.level for a in data.areas}
    for area in data.areas:
        if area.level not in AREA_LEVELS:
            raise SiteDataError(f"area {area.id}: level must be one of {AREA_LEVELS}")
    for point in data.points:
        if point.kind not in DEVICE_KINDS:
            raise SiteDataError(f"point {point.device}: kind must be one of {DEVICE_KINDS}")
        want = "grid" if point.kind == "locker" else "community"
        if point.area in levels and levels[point.area] != want:
            raise SiteDataError(f"point {point.device}: a {point.kind}'s area must be a {want}")
    for worker in data.workers:
        if worker.role not in ROLES:
            raise SiteDataError(f"worker {worker.username}: role must be one of {ROLES}")
        if worker.password is None and worker.password_hash is None:
            raise SiteDataError(f"worker {worker.username}: give password or password_hash")
        for shift in worker.shifts:
            if shift.end <= shift.start:
                raise SiteDataError(f"worker {worker.username}: a shift ends before it starts")


def load_site_data(
    engine: Engine,
    raw: Mapping[str, Any],
    *,
    clock: Callable[[], float] = time.time,
    hasher: PasswordHasher | None = None,
) -> SiteData:
    """Validate ``raw`` and upsert it in one transaction; returns the parsed data."""
    try:
        data = SiteData.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SiteDataError(f"site data: {where}: {first['msg']}") from err
    _check(data)
    hasher = hasher or PasswordHasher()
    now = clock()
    try:
        _store(engine, data, now, hasher)
    except IntegrityError as err:
        raise SiteDataError(
            "site data refers to an area, grid or worker that does not exist (or repeats a "
            f"unique value): {str(err.orig).splitlines()[0]}"
        ) from err
    return data


def _store(engine: Engine, data: SiteData, now: float, hasher: PasswordHasher) -> None:
    with engine.begin() as conn:

        def upsert(table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
            where = [table.c[k] == v for k, v in key.items()]
            if conn.execute(select(*table.primary_key.columns).where(*where)).first():
                conn.execute(update(table).where(*where).values(**values))
            else:
                conn.execute(insert(table).values(**key, **values))

        for area in data.areas:  # parents first: the file lists them top-down
            upsert(
                _areas,
                {"id": area.id},
                {"name": area.name, "level": area.level, "parent_id": area.parent},
            )
        for service in data.services:
            values = service.model_dump(exclude={"id"})
            upsert(_services, {"id": service.id}, {**values, "updated": now})
        for point in data.points:
            upsert(
                _points,
                {"device_id": point.device},
                {
                    "kind": point.kind,
                    "name": point.name,
                    "area_id": point.area,
                    "address": point.address,
                    "lat": point.lat,
                    "lon": point.lon,
                    "created": now,
                },
            )
        for worker in data.workers:
            password_hash = worker.password_hash or hasher.hash(cast(str, worker.password))
            upsert(
                _workers,
                {"username": worker.username},
                {
                    "display_name": worker.name,
                    "role": worker.role,
                    "phone": worker.phone,
                    "password_hash": password_hash,
                    "area_id": worker.area,
                    "home_lat": worker.home_lat,
                    "home_lon": worker.home_lon,
                    "speed_kmh": worker.speed_kmh,
                    "capacity": worker.capacity,
                    "active": worker.active,
                    "created": now,
                },
            )
            worker_id = conn.execute(
                select(_workers.c.id).where(_workers.c.username == worker.username)
            ).scalar_one()
            conn.execute(delete(_grids).where(_grids.c.worker_id == worker_id))
            for grid in dict.fromkeys(worker.grids):
                conn.execute(insert(_grids).values(worker_id=worker_id, grid_id=grid))
            if worker.shifts:
                conn.execute(delete(_shifts).where(_shifts.c.worker_id == worker_id))
                for shift in worker.shifts:
                    conn.execute(
                        insert(_shifts).values(
                            worker_id=worker_id, start_at=shift.start, end_at=shift.end
                        )
                    )
