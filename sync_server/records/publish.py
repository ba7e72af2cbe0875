"""Publishing a community's resident records to its kiosks: one ``residents`` version holding
what changed since the community's last version (docs/records.md, "Publishing to kiosks").

The change is computed from the records (:func:`~sync_server.records.community_items`) against
the community's current document and stored only if no other writer published in between
(``if_version``); otherwise it is computed again. So concurrent publishers of one community
never store a change made from a stale document, and the last publish after an import always
leaves the kiosks' document equal to the records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from sqlalchemy import Engine, Table, select

from sync_server.documents import (
    DocumentChangedError,
    DocumentConflictError,
    latest_version,
    publish_version,
    snapshot,
)
from sync_server.domain_models import Area
from sync_server.records.importer import check_community
from sync_server.records.items import community_items

__all__ = ["DOC", "PUBLISH_ATTEMPTS", "community_ids", "publish_communities", "publish_community"]

log = logging.getLogger(__name__)

DOC: Final = "residents"
PUBLISH_ATTEMPTS: Final = 5
"""Times the change is computed again when another writer published first."""

Clock = Callable[[], float]
_areas = cast(Table, Area.__table__)


def publish_community(engine: Engine, community_id: str, *, clock: Clock = time.time) -> int | None:
    """Publish the changed and removed residents of ``community_id`` as one version of its
    ``residents`` document; return the version, or None when the document already equals the
    records (nothing is published then).

    Raises :class:`~sync_server.records.UnknownCommunityError` for an id that is not a
    community, the document errors of :func:`sync_server.documents.publish_version` (nothing
    published), and :class:`~sync_server.documents.DocumentConflictError` when other writers
    kept publishing first.
    """
    with engine.connect() as conn:
        check_community(conn, community_id)
    for _ in range(PUBLISH_ATTEMPTS):
        base = latest_version(engine, DOC, scope=community_id)
        current = snapshot(engine, DOC, base, scope=community_id).items if base else {}
        wanted = _as_stored(community_items(engine, community_id))
        upserts = {key: item for key, item in wanted.items() if current.get(key) != item}
        deletes = sorted(key for key in current if key not in wanted)
        if not upserts and not deletes:
            log.info(
                "residents of %s: unchanged at version %d; nothing published", community_id, base
            )
            return None
        try:
            version = publish_version(
                engine,
                DOC,
                upserts=upserts,
                deletes=deletes,
                scope=community_id,
                if_version=base,
                clock=clock,
            )
        except DocumentChangedError:
            log.debug("residents of %s: another writer published first; again", community_id)
            continue
        log.info(
            "residents of %s: version %d published (%d new or changed, %d removed)",
            community_id,
            version,
            len(upserts),
            len(deletes),
        )
        return version
    raise DocumentConflictError(
        f"residents of {community_id}: other writers published first {PUBLISH_ATTEMPTS} times "
        "in a row; nothing was published, publish again"
    )


def publish_communities(
    engine: Engine, communities: Iterable[str] | None = None, *, clock: Clock = time.time
) -> dict[str, int | None]:
    """:func:`publish_community` for each of ``communities`` (default: every community of the
    ``areas`` table), in order; ``{community: version or None}``. Stops at the first error,
    which names its community."""
    ids = community_ids(engine) if communities is None else list(communities)
    return {community: publish_community(engine, community, clock=clock) for community in ids}


def community_ids(engine: Engine) -> list[str]:
    """Every ``areas`` row of level community, sorted."""
    with engine.connect() as conn:
        found = conn.execute(
            select(_areas.c.id).where(_areas.c.level == "community").order_by(_areas.c.id)
        ).scalars()
        return [str(area) for area in found]


def _as_stored(items: dict[str, Any]) -> dict[str, Any]:
    """The items as the database gives them back (JSON), so unchanged ones compare equal."""
    loaded: dict[str, Any] = json.loads(json.dumps(items, ensure_ascii=False))
    return loaded
