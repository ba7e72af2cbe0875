"""Filling a template's fields from the ID card, the household record, the kiosk config and date.

All problems are collected before anything is drawn: a certificate with a blank where the address
should be is worse than none, so :func:`resolve_fields` raises :class:`MissingFieldError` naming
every missing field (by label and source, never by value) and the template.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from device.errors import LinliError
from device.idcard.identity import LONG_TERM, Identity
from kiosk_ui.certificates.template import FieldSpec, TableBlock, Template

Value = str | list[dict[str, str]]
"""A resolved field: text, or rows (for a table) of column key -> text."""


class CertificateDataError(LinliError, ValueError):
    """The data given for a certificate cannot fill its template; nothing was rendered."""

    def __init__(self, template: Template, missing: list[str], invalid: list[str]) -> None:
        self.template = template.name
        self.missing = missing
        self.invalid = invalid
        parts = []
        if missing:
            parts.append(f"missing required data: {'; '.join(missing)}")
        if invalid:
            parts.append(f"unusable data: {'; '.join(invalid)}")
        super().__init__(
            f"{template.title} ({template.name}): {', '.join(parts)}; no certificate was produced"
        )


class MissingFieldError(CertificateDataError):
    """Required data is absent (e.g. a household record without an address)."""


def chinese_date(day: dt.date) -> str:
    """``2026-11-03`` -> ``2026年11月3日`` (the form used on certificates)."""
    return f"{day.year}年{day.month}月{day.day}日"


def age_on(birth: dt.date, today: dt.date) -> int:
    """Full years of age on ``today``."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _card_value(identity: Identity, key: str) -> str:
    raw = getattr(identity, key)
    if key == "valid_to" and raw is None:
        return LONG_TERM
    if isinstance(raw, dt.date):
        return chinese_date(raw)
    return str(raw)


class _Absent(Exception):
    """A value is not there (collected as missing)."""


class _Unusable(Exception):
    """A value is there but cannot be printed (collected as invalid)."""


def _household_raw(household: Mapping[str, Any], path: str) -> Any:
    node: Any = household
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise _Absent
        node = node[part]
    if node is None:
        raise _Absent
    return node


def _scalar_text(raw: Any, kind: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _Unusable(f"expected text, got {type(raw).__name__}")
    text = " ".join(str(raw).split())  # a stray newline must not break the layout
    if not text:
        raise _Absent
    if kind == "date":
        try:
            return chinese_date(dt.date.fromisoformat(text))
        except ValueError:
            raise _Unusable("expected a date like 2015-06-01") from None
    return text


def _rows(
    raw: Any, table: TableBlock | None, where: str, missing: list[str], invalid: list[str]
) -> list[dict[str, str]]:
    """Rows for a table; missing and unusable cells are appended to ``missing`` / ``invalid``."""
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise _Unusable("expected a list of tables (one per row)")
    if not raw:
        raise _Absent
    rows: list[dict[str, str]] = []
    columns = table.columns if table is not None else []
    for n, item in enumerate(raw, start=1):
        row: dict[str, str] = {}
        for column in columns:
            try:
                row[column.key] = _scalar_text(_household_raw(item, column.key), column.type)
            except _Absent:
                row[column.key] = ""
                if column.required:
                    missing.append(f"{column.title} of row {n} [{where}[{n}].{column.key}]")
            except _Unusable as err:
                invalid.append(f"{column.title} of row {n} [{where}[{n}].{column.key}]: {err}")
        rows.append(row)
    return rows


def _computed(key: str, identity: Identity, household: Mapping[str, Any], ctx: _Context) -> str:
    if key == "age":
        return str(age_on(identity.birth, ctx.today))
    if key == "serial":
        return ctx.serial
    if key == "valid_until":
        return chinese_date(ctx.today + dt.timedelta(days=ctx.validity_days))
    members = household.get("members")
    if not isinstance(members, list) or not members:
        raise _Absent
    return str(len(members))


class _Context:
    def __init__(self, community: str, today: dt.date, serial: str, validity_days: int) -> None:
        self.community = community
        self.today = today
        self.serial = serial
        self.validity_days = validity_days


def _table_for(template: Template, field_id: str) -> TableBlock | None:
    for block in template.blocks:
        if isinstance(block, TableBlock) and block.rows == field_id:
            return block
    return None


def _one(
    *,
    template: Template,
    field_id: str,
    spec: FieldSpec,
    identity: Identity,
    household: Mapping[str, Any],
    ctx: _Context,
    cells: tuple[list[str], list[str]],
) -> Value:
    key = spec.lookup(field_id)
    if spec.source == "card":
        text = _card_value(identity, key)
        if not text.strip():
            raise _Absent
        return text
    if spec.source == "kiosk":
        return ctx.community
    if spec.source == "today":
        return str(ctx.today.year) if spec.key == "year" else chinese_date(ctx.today)
    if spec.source == "computed":
        return _computed(key, identity, household, ctx)
    raw = _household_raw(household, key)
    if spec.type == "list":
        return _rows(raw, _table_for(template, field_id), key, *cells)
    return _scalar_text(raw, spec.type)


def resolve_fields(
    template: Template,
    identity: Identity,
    household: Mapping[str, Any],
    *,
    community: str,
    today: dt.date,
    serial: str,
) -> dict[str, Value]:
    """Every field of ``template`` as printable text (or table rows), plus ``title`` and ``serial``.

    Optional fields that are absent become "". Raises :class:`MissingFieldError` (or
    :class:`CertificateDataError` for values of the wrong shape) listing every problem at once.
    """
    if not isinstance(household, Mapping):
        raise CertificateDataError(template, [], ["the household record is not a JSON object"])
    ctx = _Context(community, today, serial, template.validity_days)
    values: dict[str, Value] = {"title": template.title, "serial": serial}
    missing: list[str] = []
    invalid: list[str] = []
    for field_id, spec in template.fields.items():
        where = f"{spec.source}: {spec.lookup(field_id)}"
        label = template.field_label(field_id)
        cells: tuple[list[str], list[str]] = ([], [])
        try:
            values[field_id] = _one(
                template=template,
                field_id=field_id,
                spec=spec,
                identity=identity,
                household=household,
                ctx=ctx,
                cells=cells,
            )
        except _Absent:
            values[field_id] = [] if spec.type == "list" else ""
            if spec.required:
                missing.append(f"{label} [{where}]")
        except _Unusable as err:
            values[field_id] = [] if spec.type == "list" else ""
            invalid.append(f"{label} [{where}]: {err}")
        if spec.required:
            missing += cells[0]
            invalid += cells[1]
        elif cells[0] or cells[1]:
            values[field_id] = []  # an optional table with holes is left out, not half-printed
    if missing:
        raise MissingFieldError(template, missing, invalid)
    if invalid:
        raise CertificateDataError(template, missing, invalid)
    return values
