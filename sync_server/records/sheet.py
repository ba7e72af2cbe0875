"""Reading a community's spreadsheet into rows of raw cells: CSV (UTF-8, UTF-8 with BOM, GB18030
/GBK as Chinese Excel writes it, UTF-16) and XLSX (openpyxl, read-only).

Cells keep their spreadsheet type (an XLSX date is a ``datetime``, a number an ``int`` or
``float``) so validation can tell an ID number typed as text from one Excel turned into a number.
Row numbers are the ones the spreadsheet program shows (the header row is ``header_row``).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sync_server.records.errors import SpreadsheetError
from sync_server.records.mapping import RecordMapping, normalise_header

__all__ = ["MAX_FILE_BYTES", "Cell", "Sheet", "decode_csv", "read_sheet"]

Cell = str | int | float | bool | dt.datetime | dt.date | dt.time | None
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
"""A community's records are a few thousand rows; a larger file is a mistake (a photo export)."""
CSV_SUFFIXES: Final = (".csv", ".txt", ".tsv")
XLSX_SUFFIXES: Final = (".xlsx", ".xlsm")


@dataclass(frozen=True)
class Sheet:
    """The header row and the non-blank data rows of one spreadsheet.

    ``headers`` are the file's header cells normalised (:func:`normalise_header`), one per
    column; ``rows`` are ``(row number, cells)`` with cells padded to the header's width.
    ``encoding`` is the CSV encoding used (None for XLSX), ``sheet`` the XLSX sheet read.
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[int, tuple[Cell, ...]], ...]
    encoding: str | None = None
    sheet: str | None = None


def read_sheet(path: str | Path, mapping: RecordMapping) -> Sheet:
    """Read ``path`` (by its suffix) as ``mapping`` says; :class:`SpreadsheetError` otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SpreadsheetError(f"{path}: cannot read the file ({err.strerror})") from err
    if size > MAX_FILE_BYTES:
        raise SpreadsheetError(
            f"{path}: {size} bytes is more than a resident list needs "
            f"(at most {MAX_FILE_BYTES}); is it the right file?"
        )
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path, mapping)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, mapping)
    if suffix == ".xls":
        raise SpreadsheetError(
            f"{path}: the old Excel 97-2003 format (.xls) is not read; "
            "save it as .xlsx (Excel: File > Save As > Excel Workbook) or as CSV"
        )
    raise SpreadsheetError(f"{path}: unknown file type {suffix or '(none)'}; give .csv or .xlsx")


def decode_csv(data: bytes, encoding: str = "auto") -> tuple[str, str]:
    """``(text, encoding used)``. ``auto``: a byte-order mark decides (UTF-8, UTF-16); else UTF-8
    if the bytes are valid UTF-8, else GB18030 (a superset of the GBK Chinese Excel writes).

    Chinese text in GBK is almost never valid UTF-8, so trying UTF-8 first cannot misread a GBK
    file as UTF-8 in practice; pure ASCII reads the same either way.
    """
    boms = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
            (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    if encoding == "auto":
        for bom, name in boms:
            if data.startswith(bom):
                return _decode(data, name), name
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as err:
            raise SpreadsheetError(
                f"the file is neither UTF-8 nor GB18030/GBK text (byte {err.start}); "
                "save it as CSV UTF-8, or as .xlsx"
            ) from None
    name = "utf-8-sig" if encoding == "utf-8" else encoding
    return _decode(data, name), name


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode(name)
    except UnicodeDecodeError as err:
        raise SpreadsheetError(
            f"the file is not valid {name} text (byte {err.start}); check source.encoding"
        ) from None


def _read_csv(path: Path, mapping: RecordMapping) -> Sheet:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpreadsheetError(f"{path}: cannot read the file ({err.strerror})") from err
    try:
        text, encoding = decode_csv(data, mapping.encoding)
    except SpreadsheetError as err:
        raise SpreadsheetError(f"{path}: {err}") from None
    delimiter = mapping.delimiter or _sniff_delimiter(text)
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as err:
        raise SpreadsheetError(f"{path}: not readable as CSV ({err})") from None
    # A CSV row number is its record number, as a spreadsheet program opening it shows it.
    numbered = [(n, tuple[Cell, ...](cells)) for n, cells in enumerate(records, start=1)]
    return _sheet(path, numbered, mapping, encoding=encoding)


def _sniff_delimiter(text: str) -> str:
    """The separator of the first non-blank line: tab (Excel's "Unicode text"), semicolon
    (European Excel) or comma."""
    for line in text.splitlines():
        if line.strip():
            counts = {d: line.count(d) for d in (",", "\t", ";")}
            best = max(counts, key=lambda d: counts[d])
            return best if counts[best] else ","
    return ","


def _read_xlsx(path: Path, mapping: RecordMapping) -> Sheet:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError) as err:
        raise SpreadsheetError(
            f"{path}: not a readable .xlsx workbook ({type(err).__name__}); "
            "open it in Excel or WPS and save it again as .xlsx"
        ) from None
    try:
        names = list(workbook.sheetnames)
        name = mapping.sheet or (workbook.worksheets[0].title if workbook.worksheets else None)
        if name is None or name not in names:
            raise SpreadsheetError(
                f"{path}: no sheet {name!r} (source.sheet in {mapping.source}); "
                f"the workbook has: {', '.join(names) or 'no sheets'}"
            )
        worksheet: Any = workbook[name]
        if not hasattr(worksheet, "iter_rows"):
            raise SpreadsheetError(f"{path}: sheet {name!r} is a chart, not a table")
        # Some programs write wrong dimensions; read every row the file holds.
        worksheet.reset_dimensions()
        # Read-only mode yields missing rows as empty ones, so the count is the row number.
        numbered = [
            (n, tuple[Cell, ...](cells))
            for n, cells in enumerate(worksheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()
    return _sheet(path, numbered, mapping, sheet=name)


def _sheet(
    path: Path,
    numbered: list[tuple[int, tuple[Cell, ...]]],
    mapping: RecordMapping,
    *,
    encoding: str | None = None,
    sheet: str | None = None,
) -> Sheet:
    header_at = mapping.header_row
    header_cells = next((cells for n, cells in numbered if n == header_at), None)
    if header_cells is None or not any(normalise_header(c) for c in header_cells):
        raise SpreadsheetError(
            f"{path}: row {header_at} (source.header_row) is empty; "
            "set source.header_row to the row holding the column titles"
        )
    headers = tuple(normalise_header(c) for c in header_cells)
    width = len(headers)
    rows = tuple(
        (n, cells[:width] + (None,) * (width - len(cells)))
        for n, cells in numbered
        if n > header_at and not _blank(cells)
    )
    return Sheet(headers=headers, rows=rows, encoding=encoding, sheet=sheet)


def _blank(cells: tuple[Cell, ...]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)
