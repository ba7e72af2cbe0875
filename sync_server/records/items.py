"""The ``residents`` document items of one community, as its kiosks expect them.

An item is ``{"id_number": KEY, "household": {...}}`` keyed by the normalised ID number
(docs/documents.md); the kiosk seals it at rest and hands ``household`` to the certificate
templates (docs/certificates.md, "The household record"): ``household_id``, ``address``,
``residence_since``, ``phone`` (the card holder's), ``members`` (``name``, ``relation``,
``gender``, ``birth``), and the extras nested by their dots (``extra.elderly.level`` ->
``{"elderly": {"level": ...}}``).

Relations are stored as 与户主关系 (relation to the head of household). For the head's own item
they are exactly the relation to the card holder; for another member's item the head is shown
as ``户主`` and the others as ``户主的<relation>``, which is always true, where guessing
"the head's mother is the spouse's mother-in-law" would not be.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Row, Table, select

from sync_server.domain_models import Household, Resident

__all__ = ["HEAD_RELATIONS", "community_items", "nest", "resident_item"]

HEAD_RELATIONS: Final = frozenset({"户主", "本人"})
"""What the 与户主关系 column says for the head of household."""
_households = cast(Table, Household.__table__)
_residents = cast(Table, Resident.__table__)


def nest(flat: Mapping[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"elderly.level": "A"}`` -> ``{"elderly": {"level": "A"}}`` (merged into ``into``);
    a later value replaces an earlier one of another shape."""
    out: dict[str, Any] = {} if into is None else into
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return out


def community_items(engine: Engine, community_id: str) -> dict[str, dict[str, Any]]:
    """Every resident of ``community_id`` as a ``residents`` item, keyed by ID number."""
    r = _residents.c
    with engine.connect() as conn:
        residents = conn.execute(
            select(_residents)
            .where(r.community_id == community_id)
            .order_by(r.household_id, r.birth_date, r.id_number)
        ).all()
        household_ids = sorted({row.household_id for row in residents})
        households: dict[str, Row[Any]] = {}
        for start in range(0, len(household_ids), 500):
            chunk = household_ids[start : start + 500]
            rows = conn.execute(select(_households).where(_households.c.id.in_(chunk)))
            households.update({row.id: row for row in rows})
    members: defaultdict[str, list[Row[Any]]] = defaultdict(list)
    for row in residents:
        members[row.household_id].append(row)
    for group in members.values():
        group.sort(key=lambda m: (m.relation not in HEAD_RELATIONS, m.birth_date, m.id_number))
    return {
        row.id_number: {
            "id_number": row.id_number,
            "household": _household_record(
                row, households[row.household_id], members[row.household_id]
            ),
        }
        for row in residents
    }


def resident_item(conn: Connection, id_number: str) -> dict[str, Any] | None:
    """One resident's ``residents`` item (the same shape as :func:`community_items`), or None."""
    r = _residents.c
    holder = conn.execute(select(_residents).where(r.id_number == id_number)).first()
    if holder is None:
        return None
    household = conn.execute(
        select(_households).where(_households.c.id == holder.household_id)
    ).one()
    group = list(conn.execute(select(_residents).where(r.household_id == holder.household_id)))
    group.sort(key=lambda m: (m.relation not in HEAD_RELATIONS, m.birth_date, m.id_number))
    return {"id_number": holder.id_number, "household": _household_record(holder, household, group)}


def _household_record(
    holder: Row[Any], household: Row[Any], members: Sequence[Row[Any]]
) -> dict[str, Any]:
    record = nest(household.extra or {})
    nest(holder.extra or {}, record)
    record["household_id"] = household.id
    record["address"] = household.address
    if household.residence_since:
        record["residence_since"] = household.residence_since
    if holder.phone:
        record["phone"] = holder.phone
    # The year of the holder's last elderly-subsidy certification (None: never), for the kiosk's
    # status answer (高龄补贴认证).
    record["subsidy_year"] = holder.subsidy_year
    holder_is_head = holder.relation in HEAD_RELATIONS
    record["members"] = [_member(m, holder, holder_is_head) for m in members]
    return record


def _member(member: Row[Any], holder: Row[Any], holder_is_head: bool) -> dict[str, str]:
    out = {"name": member.name}
    if member.id_number == holder.id_number:
        out["relation"] = "本人"
    elif member.relation in HEAD_RELATIONS:
        out["relation"] = "户主"
    elif member.relation:
        out["relation"] = member.relation if holder_is_head else f"户主的{member.relation}"
    if member.gender:
        out["gender"] = member.gender
    out["birth"] = member.birth_date
    return out
