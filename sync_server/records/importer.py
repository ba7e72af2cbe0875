"""Importing a community's spreadsheet into ``households`` and ``residents``, all or nothing.

The file is read and every row checked first (no database lock held meanwhile); then one
transaction checks the community, refuses households another community still uses, writes the
``record_imports`` row, upserts the accepted households and residents, and (``replace``) deletes
the community's residents absent from the file. A crash or error anywhere in it leaves the
previous records untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, delete, exists, insert, select, update

from sync_server.domain_models import Area, Household, RecordImport, Resident
from sync_server.records.errors import RecordsError, UnknownCommunityError
from sync_server.records.mapping import RecordMapping
from sync_server.records.sheet import Sheet, read_sheet
from sync_server.records.validate import RowProblem, Validation, validate_sheet

__all__ = [
    "CHINA_TZ",
    "UPSERT_CHUNK",
    "ImportReport",
    "check_community",
    "check_file",
    "import_records",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CHINA_TZ: Final = dt.timezone(dt.timedelta(hours=8), "CST")
"""Dates (ages, "in the future", this year) are the communities' calendar dates."""
UPSERT_CHUNK: Final = 500
"""Rows per upsert statement: bounded parameter counts on both databases."""
_areas = cast(Table, Area.__table__)
_households = cast(Table, Household.__table__)
_residents = cast(Table, Resident.__table__)
_imports = cast(Table, RecordImport.__table__)
T = TypeVar("T")


@dataclass(frozen=True)
class ImportReport:
    """What an import did. ``problems`` lists every rejected row's problems (masked); the same
    content is stored as ``record_imports.report`` and written by ``--report``."""

    import_id: int
    source: str
    community_id: str
    at: float
    rows: int
    accepted: int
    rejected: int
    households: int = 0
    moved: int = 0
    deleted: int = 0
    problems: tuple[RowProblem, ...] = ()
    missing_columns: tuple[str, ...] = ()
    ignored_columns: tuple[str, ...] = ()
    encoding: str | None = None
    sheet: str | None = None
    replace: bool = False

    def summary(self) -> str:
        """One line for a terminal or a log (no personal data)."""
        parts = [
            f"{self.source}: {self.rows} rows, {self.accepted} accepted, "
            f"{self.rejected} rejected; {self.households} households"
        ]
        if self.moved:
            parts.append(f"{self.moved} moved from another community")
        if self.replace:
            parts.append(f"{self.deleted} residents not in the file deleted")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "source": self.source,
            "community_id": self.community_id,
            "at": self.at,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "households": self.households,
            "moved": self.moved,
            "deleted": self.deleted,
            "replace": self.replace,
            "encoding": self.encoding,
            "sheet": self.sheet,
            "missing_columns": list(self.missing_columns),
            "ignored_columns": list(self.ignored_columns),
            "problems": [p.to_json() for p in self.problems],
        }


def import_records(
    engine: Engine,
    path: str | Path,
    mapping: RecordMapping,
    community_id: str,
    *,
    clock: Clock = time.time,
    replace: bool = False,
) -> ImportReport:
    """Import ``path`` into ``community_id``'s records; see the module docstring.

    Raises :class:`UnknownCommunityError`, :class:`~sync_server.records.MappingError` /
    :class:`~sync_server.records.SpreadsheetError` (nothing imported), or a database error
    (nothing imported). Rejected rows do not raise: they are in the report.
    """
    path = Path(path)
    with engine.connect() as conn:
        check_community(conn, community_id)  # fail before reading a large file
    now = clock()
    sheet, validation = check_file(path, mapping, today=_today(now))
    _refuse_empty_replace(path, validation, community_id, replace)
    with engine.begin() as conn:
        check_community(conn, community_id)
        _refuse_foreign_households(conn, validation, mapping, community_id)
        _refuse_empty_replace(path, validation, community_id, replace)
        previous = _previous_residents(conn, validation)
        import_id = _insert_import(conn, path.name, community_id, now, validation)
        _upsert_chunks(conn, _households, "id", _household_rows(validation, community_id,
                                                                 import_id, now))  # fmt: skip
        _upsert_chunks(conn, _residents, "id_number", _resident_rows(validation, community_id,
                                                                     import_id, now))  # fmt: skip
        now_in = {r.id_number: r.household_id for r in validation.accepted.values()}
        emptied = {old for id_number, (_, old) in previous.items() if now_in[id_number] != old}
        deleted = 0
        if replace:
            deleted, left = _delete_absent(conn, validation, community_id)
            emptied |= left
        _delete_empty_households(conn, emptied)
        report = ImportReport(
            import_id=import_id,
            source=path.name,
            community_id=community_id,
            at=now,
            rows=validation.rows,
            accepted=len(validation.accepted),
            rejected=validation.rejected_rows,
            households=len(validation.households),
            moved=sum(1 for community, _ in previous.values() if community != community_id),
            deleted=deleted,
            problems=tuple(validation.problems),
            missing_columns=tuple(validation.missing_columns),
            ignored_columns=tuple(validation.ignored_columns),
            encoding=sheet.encoding,
            sheet=sheet.sheet,
            replace=replace,
        )
        conn.execute(
            update(_imports)
            .where(_imports.c.id == import_id)
            .values(report=report.to_json(), rejected=report.rejected)
        )
    log.info("records import %s: %s", import_id, report.summary())
    return report


def check_file(
    path: str | Path, mapping: RecordMapping, *, today: dt.date | None = None
) -> tuple[Sheet, Validation]:
    """Read and check ``path`` without a database (``linli records check``, and step one of
    :func:`import_records`): what an import would accept and reject, minus the database's view
    (households of other communities)."""
    sheet = read_sheet(path, mapping)
    try:
        return sheet, validate_sheet(sheet, mapping, today=today or _today(time.time()))
    except RecordsError as err:
        raise type(err)(f"{path}: {err}") from None


def _refuse_empty_replace(
    path: Path, validation: Validation, community_id: str, replace: bool
) -> None:
    if replace and not validation.accepted:
        raise RecordsError(
            f"{path}: no row was accepted; refusing to replace the records of {community_id} "
            "with nothing (fix the file, or import without --replace to see the report)"
        )


def _today(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, CHINA_TZ).date()


def check_community(conn: Connection, community_id: str) -> None:
    """:class:`UnknownCommunityError` unless ``community_id`` is an area of level community."""
    level = conn.execute(
        select(_areas.c.level).where(_areas.c.id == community_id)
    ).scalar_one_or_none()
    if level is None:
        raise UnknownCommunityError(
            f"no area {community_id!r}; load the site's areas first (the areas table)"
        )
    if level != "community":
        raise UnknownCommunityError(
            f"area {community_id!r} is a {level}, not a community; records belong to a community"
        )


def _chunks(items: Sequence[T], size: int | None = None) -> Iterator[Sequence[T]]:
    size = size or UPSERT_CHUNK  # read at call time: a test makes it small
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _refuse_foreign_households(
    conn: Connection, validation: Validation, mapping: RecordMapping, community_id: str
) -> None:
    """A 户号 another community's household uses is refused, unless every resident still in
    that household is in this file (the whole household moved here): 户号 are unique within a
    police station's area only, and merging two families would be far worse than a report line."""
    foreign: set[str] = set()
    for ids in _chunks(sorted(validation.households)):
        rows = conn.execute(
            select(_households.c.id).where(
                _households.c.id.in_(ids), _households.c.community_id != community_id
            )
        )
        foreign.update(r.id for r in rows)
    if not foreign:
        return
    incoming = {row.id_number for row in validation.accepted.values()}
    for household_id in sorted(foreign):
        members = conn.execute(
            select(_residents.c.id_number).where(_residents.c.household_id == household_id)
        ).scalars()
        if all(m in incoming for m in members):
            continue
        validation.reject(
            [r.row for r in validation.accepted.values() if r.household_id == household_id],
            mapping.header_of("household_id"),
            "this 户号 belongs to a household of another community that still has residents "
            "not in this file; household numbers must be unique across communities "
            "(prefix them, e.g. with the community's code)",
        )


def _previous_residents(conn: Connection, validation: Validation) -> dict[str, tuple[str, str]]:
    """``id_number -> (community, household)`` for the accepted residents already stored."""
    ids = sorted(row.id_number for row in validation.accepted.values())
    found: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            select(
                _residents.c.id_number, _residents.c.community_id, _residents.c.household_id
            ).where(_residents.c.id_number.in_(chunk))
        )
        found.update({r.id_number: (r.community_id, r.household_id) for r in rows})
    return found


def _insert_import(
    conn: Connection, source: str, community_id: str, now: float, validation: Validation
) -> int:
    result = conn.execute(
        insert(_imports).values(
            source=source[:256],
            community_id=community_id,
            at=now,
            accepted=len(validation.accepted),
            rejected=validation.rejected_rows,
            report={},
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def _household_rows(
    validation: Validation, community_id: str, import_id: int, now: float
) -> list[dict[str, Any]]:
    # Key order: two imports upserting overlapping rows on PostgreSQL lock them in the same
    # order, so one waits for the other instead of deadlocking.
    return [
        {
            "id": h.id,
            "community_id": community_id,
            "address": h.address,
            "residence_since": h.residence_since,
            "extra": h.extra,
            "import_id": import_id,
            "updated": now,
        }
        for h in sorted(validation.households.values(), key=lambda h: h.id)
    ]


def _resident_rows(
    validation: Validation, community_id: str, import_id: int, now: float
) -> list[dict[str, Any]]:
    return [
        {
            "id_number": r.id_number,
            "household_id": r.household_id,
            "community_id": community_id,
            "name": r.name,
            "gender": r.gender,
            "birth_date": r.birth_date,
            "relation": r.relation,
            "phone": r.phone,
            "subsidy_year": r.subsidy_year,
            "extra": r.extra,
            "import_id": import_id,
            "updated": now,
        }
        for r in sorted(validation.accepted.values(), key=lambda r: r.id_number)
    ]


def _upsert_chunks(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        _upsert(conn, table, key, list(chunk))


def _upsert(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE on both databases (one statement per chunk)."""
    from sqlalchemy.dialects import postgresql, sqlite

    columns = [c.name for c in table.columns if c.name != key]
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table)
        conn.execute(
            pg.on_conflict_do_update(
                index_elements=[table.c[key]], set_={c: pg.excluded[c] for c in columns}
            ),
            rows,
        )
    else:
        lite = sqlite.insert(table)
        conn.execute(
            lite.on_conflict_do_update(
                index_elements=[table.c[key]], set_={c: lite.excluded[c] for c in columns}
            ),
            rows,
        )


def _delete_absent(
    conn: Connection, validation: Validation, community_id: str
) -> tuple[int, set[str]]:
    """Delete the community's residents whose ID number is nowhere in the file. A resident whose
    row was rejected but whose ID number was readable is kept, with the data it had: a typo in a
    phone number must not delete a person."""
    stored = conn.execute(
        select(_residents.c.id_number, _residents.c.household_id).where(
            _residents.c.community_id == community_id
        )
    ).all()
    absent = sorted(r.id_number for r in stored if r.id_number not in validation.readable_ids)
    for chunk in _chunks(absent):
        conn.execute(delete(_residents).where(_residents.c.id_number.in_(chunk)))
    households = conn.execute(
        select(_households.c.id).where(_households.c.community_id == community_id)
    ).scalars()
    return len(absent), set(households)


def _delete_empty_households(conn: Connection, candidates: Iterable[str]) -> None:
    """Households this import left without a resident (moved away, deleted) go too."""
    nobody = ~exists().where(_residents.c.household_id == _households.c.id)
    for chunk in _chunks(sorted(candidates)):
        conn.execute(delete(_households).where(_households.c.id.in_(chunk), nobody))
