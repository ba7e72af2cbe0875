"""The area tree (street -> community -> grid): who is above and below whom.

Areas are few (a district has hundreds), so each function reads the whole tree in one query and
walks it in Python; a loop in the data (a parent chain that comes back) ends the walk.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection, Table, select

from sync_server.domain_models import Area

__all__ = ["ancestors", "descendants"]

_areas = cast(Table, Area.__table__)


def _tree(conn: Connection) -> dict[str, tuple[str | None, str]]:
    """Each area id -> (parent id, level)."""
    return {
        row.id: (row.parent_id, row.level)
        for row in conn.execute(select(_areas.c.id, _areas.c.parent_id, _areas.c.level))
    }


def ancestors(conn: Connection, area_id: str) -> list[tuple[str, str]]:
    """``(id, level)`` of ``area_id`` and each area above it, nearest first."""
    tree = _tree(conn)
    found: list[tuple[str, str]] = []
    current: str | None = area_id
    while current is not None and current in tree and all(current != a for a, _ in found):
        parent, level = tree[current]
        found.append((current, level))
        current = parent
    return found


def descendants(conn: Connection, area_id: str | None) -> frozenset[str]:
    """``area_id`` and every area under it (empty for None)."""
    if area_id is None:
        return frozenset()
    children: dict[str, list[str]] = {}
    for child, (parent, _level) in _tree(conn).items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    found: set[str] = set()
    todo = [area_id]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return frozenset(found)
