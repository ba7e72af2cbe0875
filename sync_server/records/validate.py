"""Checking a spreadsheet's rows before anything is written: every problem of every row, at once.

Row rules (docs/records.md): required fields, the ID number (normalised: blanks and a leading
``'`` removed, full-width characters folded, upper-case ``X``; then length, digits, check digit,
embedded birth date, gender digit against 性别, birth date column against the ID), dates,
mainland mobile numbers, a plausible subsidy year. File rules: an ID number in two rows rejects
both; a household (户号) with two different addresses rejects all its rows.

A :class:`RowProblem` carries the row number, the column header and the problem, with the ID
number and name **masked** (``110105********12``, ``张*``): reports are saved and mailed around.
Problem texts never quote a cell.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from device.protocol import id_number_problems, parse_yyyymmdd
from sync_server.phones import normalize_mobile
from sync_server.records.errors import SpreadsheetError
from sync_server.records.mapping import (
    HOUSEHOLD_RECORD_KEYS,
    REQUIRED_FIELDS,
    RecordMapping,
)
from sync_server.records.sheet import Cell, Sheet

__all__ = [
    "HouseholdData",
    "RowProblem",
    "ValidRow",
    "Validation",
    "column_letter",
    "mask_id_number",
    "mask_name",
    "normalise_id_number",
    "validate_sheet",
]

_SCIENTIFIC: Final = re.compile(r"^\d(\.\d+)?E\+?\d+$")
_YEAR: Final = re.compile(r"^(\d{4})(\.0+)?年?$")
MIN_SUBSIDY_YEAR: Final = 2000
MAX_EXTRA_CHARS: Final = 1024
LIMITS: Final = {"name": 64, "household_id": 64, "address": 256, "relation": 16}
"""Column widths of ``residents`` and ``households`` (sync_server/domain_models.py)."""
GENDERS: Final = {
    "男": "男", "男性": "男", "M": "男", "MALE": "男", "1": "男",
    "女": "女", "女性": "女", "F": "女", "FEMALE": "女", "2": "女",
}  # fmt: skip
LOST_DIGITS: Final = (
    "stored as a number, lost digits: Excel keeps 15 significant digits of a number; "
    "format the column as text and type the ID numbers again (or export from the source system)"
)


def mask_id_number(text: str) -> str:
    """``110105194912310012`` -> ``110105********12``; anything under 12 characters is all stars.

    Reports keep the region (first 6) and the last 2 characters: enough to find the row, not
    enough to be the number. The star count is fixed so the length is not given away either.
    """
    if len(text) < 12:
        return "********"
    return f"{text[:6]}********{text[-2:]}"


def mask_name(text: str) -> str:
    """``张三丰`` -> ``张*``: the first character only."""
    return f"{text[0]}*" if text else ""


def normalise_id_number(text: str) -> str:
    """How an ID number is written as a key: full-width folded, blanks and a leading ``'``
    (Excel's text marker) removed, upper-case ``X``."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(folded.split()).lstrip("'").upper()


def column_letter(index: int) -> str:
    """0 -> ``A``, 26 -> ``AA``: the column as Excel and WPS label it."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row; ``id_number`` and ``name`` are masked."""

    row: int
    column: str
    problem: str
    id_number: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "problem": self.problem,
            "id_number": self.id_number,
            "name": self.name,
        }

    def line(self) -> str:
        """``row 7, 身份证号码 (110105********12 张*): check digit is 1, expected 2``."""
        who = " ".join(part for part in (self.id_number, self.name) if part)
        return f"row {self.row}, {self.column}{f' ({who})' if who else ''}: {self.problem}"


@dataclass(frozen=True, repr=False)
class ValidRow:
    """A row that passed every check; ``birth_date`` is ISO, ``gender`` 男/女."""

    row: int
    id_number: str
    name: str
    gender: str
    birth_date: str
    household_id: str
    relation: str | None
    phone: str | None
    subsidy_year: int | None
    extra: dict[str, Any]

    def __repr__(self) -> str:
        return f"ValidRow(row={self.row}, id_number={mask_id_number(self.id_number)!r})"


@dataclass(repr=False)
class HouseholdData:
    """A household as the file gives it: the address every row agrees on (blank cells take it
    from another row), the earliest 居住起始日期, the first value of each household extra."""

    id: str
    address: str
    residence_since: str | None
    extra: dict[str, Any]
    rows: list[int]


@dataclass
class Validation:
    """The outcome of :func:`validate_sheet` (and of the importer's database checks)."""

    rows: int
    accepted: dict[int, ValidRow]
    households: dict[str, HouseholdData]
    problems: list[RowProblem]
    readable_ids: set[str]
    """Valid ID numbers found in the file, rejected rows included (``replace`` keeps them)."""
    missing_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    masked_who: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def rejected_rows(self) -> int:
        return len({p.row for p in self.problems})

    def reject(self, rows: Iterable[int], column: str, problem: str) -> None:
        """Reject accepted ``rows`` for a reason found later (the database's view)."""
        for row in rows:
            masked_id, masked_name = self.masked_who.get(row, ("", ""))
            self.problems.append(RowProblem(row, column, problem, masked_id, masked_name))
            self.accepted.pop(row, None)
        kept = {r.household_id for r in self.accepted.values()}
        self.households = {k: v for k, v in self.households.items() if k in kept}
        self.problems.sort(key=lambda p: p.row)


@dataclass(repr=False)
class _Parsed:
    row: int
    masked_id: str = ""
    masked_name: str = ""
    id_text: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    household_extra: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


class _Bad(Exception):
    """A cell that cannot be used; the message is the problem (never the value)."""


def validate_sheet(sheet: Sheet, mapping: RecordMapping, *, today: dt.date) -> Validation:
    """Check every row of ``sheet``; :class:`SpreadsheetError` when a required column is missing
    or a mapped header appears twice (nothing could be imported)."""
    index, missing, ignored = _column_index(sheet, mapping)
    parsed = [_parse_row(n, cells, index, mapping, today) for n, cells in sheet.rows]
    _duplicates(parsed, mapping)
    households = _households(parsed, mapping)
    problems: list[RowProblem] = []
    accepted: dict[int, ValidRow] = {}
    for p in parsed:
        for column, problem in p.problems:
            problems.append(RowProblem(p.row, column, problem, p.masked_id, p.masked_name))
        if not p.problems:
            accepted[p.row] = _valid(p)
    kept = {row.household_id for row in accepted.values()}
    readable = {p.id_text for p in parsed if p.id_text and not id_number_problems(p.id_text)}
    return Validation(
        rows=len(parsed),
        accepted=accepted,
        households={k: v for k, v in households.items() if k in kept},
        problems=problems,
        readable_ids=readable,
        missing_columns=missing,
        ignored_columns=ignored,
        masked_who={p.row: (p.masked_id, p.masked_name) for p in parsed},
    )


def _column_index(
    sheet: Sheet, mapping: RecordMapping
) -> tuple[dict[str, int], list[str], list[str]]:
    index: dict[str, int] = {}
    ignored: list[str] = []
    for i, header in enumerate(sheet.headers):
        if not header:
            continue
        target = mapping.columns.get(header)
        if target is None:
            target = _unmapped_target(header, mapping)
            if target is None or target in index:
                ignored.append(header)
                continue
        if target in index:
            raise SpreadsheetError(
                f"column {header!r} appears twice (columns {column_letter(index[target])} and "
                f"{column_letter(i)}); remove or rename one"
            )
        index[target] = i
    absent = [t for t in REQUIRED_FIELDS if t not in index]
    if absent:
        found = ", ".join(h for h in sheet.headers if h) or "none"
        wanted = ", ".join(repr(mapping.header_of(t)) for t in absent)
        raise SpreadsheetError(
            f"no column {wanted} in the header row {mapping.header_row} "
            f"(found: {found}); check source.header_row and [columns] in {mapping.source}"
        )
    missing = [mapping.header_of(t) for t in mapping.headers if t not in index]
    return index, missing, ignored


def _unmapped_target(header: str, mapping: RecordMapping) -> str | None:
    if mapping.unmapped != "extra":
        return None
    key = header.replace(".", "_")
    if key in HOUSEHOLD_RECORD_KEYS or f"extra.{key}" in mapping.headers:
        return None
    return f"extra.{key}"


def _parse_row(
    n: int, cells: tuple[Cell, ...], index: Mapping[str, int], mapping: RecordMapping,
    today: dt.date,
) -> _Parsed:  # fmt: skip
    p = _Parsed(row=n)

    def cell(target: str) -> Cell:
        return cells[index[target]] if target in index else None

    name = _text(cell("name"))
    p.masked_name = mask_name(name or "")
    embedded: dt.date | None = None
    raw_id = cell("id_number")
    p.masked_id = mask_id_number(_raw_text(raw_id))
    try:
        p.id_text = _id_text(raw_id)
        problems = id_number_problems(p.id_text)
        if problems and re.fullmatch(r"\d{15}000", p.id_text) and problems[0].startswith("check"):
            problems = [LOST_DIGITS]  # Excel's 15 digits padded with zeros on the way out
        if problems:
            raise _Bad("; ".join(problems))
        embedded = parse_yyyymmdd(p.id_text[6:14])
        if embedded is not None and embedded > today:
            raise _Bad("digits 7-14 are a birth date in the future")
    except _Bad as err:
        p.problems.append((mapping.header_of("id_number"), str(err)))
        embedded = None

    def take(target: str, convert: Any, *args: Any) -> Any:
        try:
            return convert(cell(target), *args)
        except _Bad as err:
            p.problems.append((mapping.header_of(target), str(err)))
            return None

    p.values["name"] = take("name", _required_text, "name")
    p.values["household_id"] = take("household_id", _required_text, "household_id")
    p.values["address"] = take("address", _limited_text, "address")
    p.values["relation"] = take("relation", _limited_text, "relation")
    p.values["phone"] = take("phone", _phone)
    p.values["subsidy_year"] = take("subsidy_year", _subsidy_year, today)
    p.values["residence_since"] = take("residence_since", _date, mapping, today)
    birth = take("birth_date", _date, mapping, today)
    gender = take("gender", _gender)
    if embedded is not None and p.id_text is not None:
        odd = int(p.id_text[16]) % 2 == 1
        if gender is not None and gender != ("男" if odd else "女"):
            p.problems.append((mapping.header_of("gender"), "does not match the ID number's "
                               f"17th digit ({'odd: 男' if odd else 'even: 女'})"))  # fmt: skip
        if birth is not None and birth != embedded:
            p.problems.append(
                (mapping.header_of("birth_date"), "does not match the birth date in the ID number")
            )
        p.values["gender"] = "男" if odd else "女"
        p.values["birth_date"] = embedded.isoformat()
    _extras(p, cells, index, mapping)
    return p


def _extras(
    p: _Parsed, cells: tuple[Cell, ...], index: Mapping[str, int], mapping: RecordMapping
) -> None:
    for target, i in index.items():
        kind, _, key = target.partition(".")
        if kind not in ("extra", "household_extra"):
            continue
        try:
            value = _extra_value(cells[i])
        except _Bad as err:
            p.problems.append((mapping.headers.get(target, key), str(err)))
            continue
        if value is not None:
            (p.extra if kind == "extra" else p.household_extra)[key] = value


def _duplicates(parsed: list[_Parsed], mapping: RecordMapping) -> None:
    rows: defaultdict[str, list[int]] = defaultdict(list)
    for p in parsed:
        if p.id_text:
            rows[p.id_text].append(p.row)
    for p in parsed:
        others = [r for r in rows.get(p.id_text or "", []) if r != p.row]
        if others:
            where = ", ".join(map(str, others))
            p.problems.append(
                (mapping.header_of("id_number"), f"the same ID number is also in row {where}")
            )


def _households(parsed: list[_Parsed], mapping: RecordMapping) -> dict[str, HouseholdData]:
    groups: defaultdict[str, list[_Parsed]] = defaultdict(list)
    for p in parsed:
        if p.values.get("household_id"):
            groups[p.values["household_id"]].append(p)
    households: dict[str, HouseholdData] = {}
    column = mapping.header_of("address")
    for household_id, members in groups.items():
        addresses: dict[str, int] = {}
        for p in members:
            if p.values.get("address"):
                addresses.setdefault(" ".join(p.values["address"].split()), p.row)
        if len(addresses) > 1:
            where = ", ".join(map(str, addresses.values()))
            for p in members:
                p.problems.append((column, f"this household (户号) has different addresses in "
                                   f"rows {where}; one household, one address"))  # fmt: skip
            continue
        if not addresses:
            for p in members:
                p.problems.append((column, "required: no row of this household gives one"))
            continue
        dates = [p.values["residence_since"] for p in members if p.values.get("residence_since")]
        extra: dict[str, Any] = {}
        for p in members:
            for key, value in p.household_extra.items():
                extra.setdefault(key, value)
        households[household_id] = HouseholdData(
            id=household_id,
            address=next(iter(addresses)),
            residence_since=min(dates).isoformat() if dates else None,
            extra=extra,
            rows=[p.row for p in members],
        )
    return households


def _valid(p: _Parsed) -> ValidRow:
    v = p.values
    assert p.id_text is not None
    return ValidRow(
        row=p.row,
        id_number=p.id_text,
        name=v["name"],
        gender=v["gender"],
        birth_date=v["birth_date"],
        household_id=v["household_id"],
        relation=v.get("relation"),
        phone=v.get("phone"),
        subsidy_year=v.get("subsidy_year"),
        extra=dict(p.extra),
    )


# ------------------------------------------------------------------------------ cells


def _raw_text(cell: Cell) -> str:
    if isinstance(cell, float) and math.isfinite(cell):
        return f"{cell:.0f}"
    return normalise_id_number(str(cell)) if cell is not None else ""


def _text(cell: Cell) -> str | None:
    """A cell as text, or None when blank. Whole numbers lose Excel's ``.0``."""
    if cell is None:
        return None
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    if isinstance(cell, dt.datetime):
        cell = cell.date()
    text = " ".join(str(cell).split())
    return text or None


def _id_text(cell: Cell) -> str:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        raise _Bad("required; the cell is empty")
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        raise _Bad(LOST_DIGITS)
    if not isinstance(cell, str):
        raise _Bad(f"is a {type(cell).__name__}, not an ID number")
    text = normalise_id_number(cell)
    if _SCIENTIFIC.match(text):
        raise _Bad(LOST_DIGITS)
    if len(text) == 15 and text.isdigit():
        raise _Bad("a 15-digit first-generation ID number; give the 18-digit number")
    return text


def _required_text(cell: Cell, target: str) -> str:
    text = _limited_text(cell, target)
    if text is None:
        raise _Bad("required; the cell is empty")
    return text


def _limited_text(cell: Cell, target: str) -> str | None:
    text = _text(cell)
    limit = LIMITS[target]
    if text is not None and len(text) > limit:
        raise _Bad(f"longer than {limit} characters")
    return text


def _phone(cell: Cell) -> str | None:
    text = _text(cell)
    if text is None:
        return None
    mobile = normalize_mobile(text)
    if mobile is None:
        raise _Bad(
            "not a mainland mobile number (11 digits starting 13-19, +86 allowed); "
            "keep a landline in another column (extra.landline)"
        )
    return mobile


def _subsidy_year(cell: Cell, today: dt.date) -> int | None:
    text = _text(cell)
    if text is None:
        return None
    match = _YEAR.match(text)
    if match is None or isinstance(cell, dt.date | dt.time):
        raise _Bad("not a year like 2025")
    year = int(match.group(1))
    if not MIN_SUBSIDY_YEAR <= year <= today.year:
        raise _Bad(f"not a plausible certification year ({MIN_SUBSIDY_YEAR} to {today.year})")
    return year


def _date(cell: Cell, mapping: RecordMapping, today: dt.date) -> dt.date | None:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    if isinstance(cell, dt.datetime):
        day = cell.date()
    elif isinstance(cell, dt.date):
        day = cell
    else:
        text = _text(cell) or ""
        parsed = _parse_date(text, mapping.date_formats)
        if parsed is None:
            raise _Bad(f"not a date (accepted: {', '.join(mapping.date_formats)})")
        day = parsed
    if day > today:
        raise _Bad("a date in the future")
    return day


def _parse_date(text: str, formats: tuple[str, ...]) -> dt.date | None:
    # A CSV saved by Excel may give "1949/12/31 0:00": the time part is dropped.
    for candidate in dict.fromkeys((text, text.split(" ", maxsplit=1)[0])):
        for fmt in formats:
            try:
                return dt.datetime.strptime(candidate, fmt).date()
            except ValueError:
                continue
    return None


def _gender(cell: Cell) -> str | None:
    text = _text(cell)
    if text is None:
        return None
    gender = GENDERS.get(text.upper())
    if gender is None:
        raise _Bad("must be 男 or 女")
    return gender


def _extra_value(cell: Cell) -> Any:
    if cell is None:
        return None
    if isinstance(cell, dt.datetime | dt.date | dt.time):
        return _text(cell)
    if isinstance(cell, float):
        if not math.isfinite(cell):
            raise _Bad("not a finite number")
        return int(cell) if cell.is_integer() else cell
    if isinstance(cell, bool | int):
        return cell
    text = str(cell).strip()
    if len(text) > MAX_EXTRA_CHARS:
        raise _Bad(f"longer than {MAX_EXTRA_CHARS} characters")
    return text or None
