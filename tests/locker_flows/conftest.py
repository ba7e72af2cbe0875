"""A simulated locker per test (hardware_sim.locker_site): GPIO locks and doors, a store file and
the locker core, on a FakeClock so door timers and lockouts cost no real time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware_sim.locker_site import LockerSite

MakeSite = Callable[..., LockerSite]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[MakeSite]:
    """``make_site(**locker_options)``: a locker with 4 compartments (S, M, M, L), doors read."""
    sites: list[LockerSite] = []

    def make(**options: Any) -> LockerSite:
        path = tmp_path / f"site{len(sites)}"
        path.mkdir()
        site = LockerSite.build(path, **options)
        sites.append(site)
        site.settle(0.1)
        return site

    yield make
    for site in sites:
        site.close()


@pytest.fixture
def site(make_site: MakeSite) -> LockerSite:
    return make_site()
