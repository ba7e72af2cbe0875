"""Resident records (一户一档): import from the community's spreadsheets, validation report,
queries, export, reminders, and the ``residents`` document items for each community's kiosks.

docs/records.md is the guide. The pieces: :mod:`.mapping` (the column mapping file),
:mod:`.sheet` (CSV/XLSX reading), :mod:`.validate` (row and file rules, masked report lines),
:mod:`.importer` (one transaction), :mod:`.query` (find and export), :mod:`.remind`,
:mod:`.items` (kiosk documents).
"""

from __future__ import annotations

from sync_server.records.errors import (
    ExportError,
    MappingError,
    RecordsError,
    SpreadsheetError,
    UnknownCommunityError,
)
from sync_server.records.importer import ImportReport, import_records
from sync_server.records.items import community_items
from sync_server.records.mapping import RecordMapping, load_mapping, parse_mapping
from sync_server.records.query import (
    ResidentRecord,
    age_on,
    export_residents,
    find_residents,
)
from sync_server.records.remind import ReminderCounts, SendFn, dedupe_key, remind_residents
from sync_server.records.validate import RowProblem, mask_id_number, mask_name

__all__ = [
    "ExportError",
    "ImportReport",
    "MappingError",
    "RecordMapping",
    "RecordsError",
    "ReminderCounts",
    "ResidentRecord",
    "RowProblem",
    "SendFn",
    "SpreadsheetError",
    "UnknownCommunityError",
    "age_on",
    "community_items",
    "dedupe_key",
    "export_residents",
    "find_residents",
    "import_records",
    "load_mapping",
    "mask_id_number",
    "mask_name",
    "parse_mapping",
    "remind_residents",
]
