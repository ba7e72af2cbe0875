"""The column mapping file: which spreadsheet column feeds which resident record field.

Communities keep their 一户一档 spreadsheets with their own headers; a small TOML file says how
to read one (docs/records.md, ``sync_server/records_mapping.example.toml``). Loading it checks
everything up front, Klipper style: an unknown key, an unknown field or a field fed by two
columns is an error naming the key, before any spreadsheet is opened.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from sync_server.records.errors import MappingError

__all__ = [
    "DEFAULT_DATE_FORMATS",
    "FIELDS",
    "HOUSEHOLD_RECORD_KEYS",
    "REQUIRED_FIELDS",
    "RecordMapping",
    "load_mapping",
    "normalise_header",
    "parse_mapping",
]

FIELDS: Final = (
    "id_number",
    "name",
    "gender",
    "birth_date",
    "household_id",
    "address",
    "residence_since",
    "relation",
    "phone",
    "subsidy_year",
)
"""The standard fields; any other column is kept as ``extra.KEY`` or ``household_extra.KEY``."""
REQUIRED_FIELDS: Final = ("id_number", "name", "household_id", "address")
"""Fields the mapping must name (a row may leave ``address`` blank if another row of its
household gives it); ``birth_date`` and ``gender`` default to what the ID number says."""
HOUSEHOLD_RECORD_KEYS: Final = frozenset(
    {"id_number", "address", "residence_since", "phone", "members", "household_id", "subsidy_year"}
)
"""Keys of the household record the kiosk reads (kiosk_ui/certificates): an extra key may not
start with one of them, or it would shadow real data on a certificate."""
DEFAULT_DATE_FORMATS: Final = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")
ENCODINGS: Final = ("auto", "utf-8", "gb18030", "gbk", "utf-16")
DELIMITERS: Final = {"auto": "", ",": ",", "tab": "\t", "\t": "\t", ";": ";"}
_SOURCE_KEYS: Final = ("sheet", "header_row", "encoding", "delimiter", "date_formats", "unmapped")
_EXTRA_KEY = re.compile(r"^[^\s.]+(\.[^\s.]+)*$")
MAX_HEADER_ROW: Final = 100

Unmapped = Literal["ignore", "extra"]


def normalise_header(text: object) -> str:
    """A header as matched: every blank removed (Excel headers often hold line breaks or
    full-width spaces), and a stray byte-order mark."""
    if text is None:
        return ""
    return "".join(str(text).replace("\ufeff", "").split())


@dataclass(frozen=True)
class RecordMapping:
    """A loaded mapping. ``columns`` maps a normalised header to a field (``id_number``...,
    ``extra.KEY``, ``household_extra.KEY``); ``headers`` gives each target its header as the
    mapping file wrote it (for messages)."""

    columns: Mapping[str, str]
    headers: Mapping[str, str]
    sheet: str | None = None
    header_row: int = 1
    encoding: str = "auto"
    delimiter: str = ""
    date_formats: tuple[str, ...] = DEFAULT_DATE_FORMATS
    unmapped: Unmapped = "ignore"
    source: str = "<mapping>"
    fields: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", frozenset(self.columns.values()))

    def header_of(self, target: str) -> str:
        """The header that feeds ``target`` (or the target's own name when none does)."""
        return self.headers.get(target, target)


def load_mapping(path: str | Path) -> RecordMapping:
    """Read and check a mapping file; :class:`MappingError` names the file and the bad key."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise MappingError(f"{where}: cannot read the mapping file ({err.strerror})") from err
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MappingError(f"{where}: the mapping file must be UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise MappingError(f"{where}: not valid TOML: {err}") from None
    return parse_mapping(data, source=where)


def parse_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> RecordMapping:
    """Check a mapping given as a dict (the parsed TOML)."""
    unknown = sorted(set(data) - {"source", "columns"})
    if unknown:
        raise MappingError(
            f"{source}: unknown key {unknown[0]!r}; a mapping has [source] and [columns]"
        )
    settings = data.get("source", {})
    if not isinstance(settings, Mapping):
        raise MappingError(f"{source}: 'source' must be a table ([source])")
    columns = data.get("columns")
    if not isinstance(columns, Mapping) or not columns:
        raise MappingError(
            f"{source}: 'columns' is missing; add a [columns] table of "
            '"spreadsheet header" = "field" lines'
        )
    normalised, headers = _columns(columns, source)
    return RecordMapping(
        columns=normalised,
        headers=headers,
        source=source,
        **_settings(settings, source),
    )


def _columns(columns: Mapping[str, Any], source: str) -> tuple[dict[str, str], dict[str, str]]:
    normalised: dict[str, str] = {}
    headers: dict[str, str] = {}
    for header, target in columns.items():
        key = f"columns.{header!r}"
        if not isinstance(target, str):
            raise MappingError(f"{source}: {key} must be a field name in quotes")
        _check_target(target, key, source)
        norm = normalise_header(header)
        if not norm:
            raise MappingError(f"{source}: {key}: a header cannot be blank")
        if norm in normalised:
            raise MappingError(
                f"{source}: {key} is the same header as {headers[normalised[norm]]!r} "
                "once blanks are removed"
            )
        if target in headers:
            raise MappingError(
                f"{source}: {key} and columns.{headers[target]!r} both feed {target!r}; "
                "one column per field"
            )
        normalised[norm] = target
        headers[target] = str(header)
    missing = [name for name in REQUIRED_FIELDS if name not in headers]
    if missing:
        raise MappingError(
            f"{source}: [columns] has no column for {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_FIELDS)})"
        )
    _check_extra_prefixes(headers, source)
    return normalised, headers


def _check_target(target: str, key: str, source: str) -> None:
    if target in FIELDS:
        return
    kind, _, extra = target.partition(".")
    if kind not in ("extra", "household_extra") or not extra:
        raise MappingError(
            f"{source}: {key} = {target!r} is not a field; use one of {', '.join(FIELDS)}, "
            "extra.KEY (kept on the resident) or household_extra.KEY (kept on the household)"
        )
    if not _EXTRA_KEY.match(extra):
        raise MappingError(
            f"{source}: {key} = {target!r}: an extra key is dotted names without blanks, "
            "e.g. extra.elderly.level"
        )
    if extra.split(".")[0] in HOUSEHOLD_RECORD_KEYS:
        raise MappingError(
            f"{source}: {key} = {target!r} would shadow the household record's "
            f"{extra.split('.')[0]!r}; choose another key"
        )


def _check_extra_prefixes(headers: Mapping[str, str], source: str) -> None:
    """``extra.elderly`` and ``extra.elderly.level`` cannot both exist, nor ``extra.x`` and
    ``household_extra.x``: the kiosk's record nests them by the dots into one object."""
    keys: dict[str, str] = {}
    for target in (t for t in headers if "." in t):
        key = target.partition(".")[2]
        if key in keys:
            raise MappingError(
                f"{source}: columns.{headers[target]!r} and columns.{headers[keys[key]]!r} "
                f"both give {key!r}; rename one of them"
            )
        keys[key] = target
    for key, target in keys.items():
        parts = key.split(".")
        for n in range(1, len(parts)):
            inner = keys.get(".".join(parts[:n]))
            if inner is not None:
                raise MappingError(
                    f"{source}: columns.{headers[target]!r} = {target!r} is inside "
                    f"columns.{headers[inner]!r} = {inner!r}; rename one of them"
                )


def _settings(settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(_SOURCE_KEYS))
    if unknown:
        raise MappingError(
            f"{source}: unknown key source.{unknown[0]}; known: {', '.join(_SOURCE_KEYS)}"
        )
    out: dict[str, Any] = {}
    sheet = settings.get("sheet")
    if sheet is not None:
        if not isinstance(sheet, str) or not sheet.strip():
            raise MappingError(f"{source}: source.sheet must be a sheet name in quotes")
        out["sheet"] = sheet
    header_row = settings.get("header_row", 1)
    if isinstance(header_row, bool) or not isinstance(header_row, int):
        raise MappingError(f"{source}: source.header_row must be a whole number (1 = first row)")
    if not 1 <= header_row <= MAX_HEADER_ROW:
        raise MappingError(f"{source}: source.header_row must be 1 to {MAX_HEADER_ROW}")
    out["header_row"] = header_row
    out["encoding"] = _encoding(settings.get("encoding", "auto"), source)
    delimiter = settings.get("delimiter", "auto")
    if not isinstance(delimiter, str) or delimiter not in DELIMITERS:
        raise MappingError(
            f"{source}: source.delimiter must be one of "
            + ", ".join(repr(d) for d in DELIMITERS if d != "\t")
        )
    out["delimiter"] = DELIMITERS[delimiter]
    out["date_formats"] = _date_formats(settings.get("date_formats"), source)
    unmapped = settings.get("unmapped", "ignore")
    if unmapped not in ("ignore", "extra"):
        raise MappingError(
            f"{source}: source.unmapped must be 'ignore' (drop other columns) or 'extra' "
            "(keep them on the resident as extra.HEADER)"
        )
    out["unmapped"] = unmapped
    return out


def _encoding(value: Any, source: str) -> str:
    if not isinstance(value, str) or value.lower() not in ENCODINGS:
        raise MappingError(f"{source}: source.encoding must be one of {', '.join(ENCODINGS)}")
    name = value.lower()
    return "gb18030" if name == "gbk" else name  # a superset: GBK files decode identically


def _date_formats(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_DATE_FORMATS
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise MappingError(
            f'{source}: source.date_formats must be a list of formats like "%Y-%m-%d"'
        )
    sample = dt.date(1949, 10, 1)
    for fmt in value:
        if not all(code in fmt for code in ("%Y", "%m", "%d")):
            raise MappingError(
                f"{source}: source.date_formats: {fmt!r} needs %Y, %m and %d "
                "(a four-digit year, the month and the day)"
            )
        try:
            parsed = dt.datetime.strptime(sample.strftime(fmt), fmt).date()
        except ValueError:
            parsed = None
        if parsed != sample:
            raise MappingError(f"{source}: source.date_formats: {fmt!r} does not read back a date")
    return tuple(value)
