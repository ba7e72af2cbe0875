"""The live summary in the terminal: scenario progress, devices online, cases by state."""

from __future__ import annotations

import threading
from collections.abc import Callable

from hardware_sim.vsite.runner import StepResult
from hardware_sim.vsite.site import VirtualSite

MARKS = {"ok": "✓", "failed": "✗", "not run": "·"}
STATE_ORDER = (
    "draft", "deposited", "assigned", "collected", "processing", "result_stored", "completed",
    "cancelled",
)  # fmt: skip


def status_line(site: VirtualSite) -> str:
    """``online 3/3 · cases: assigned 1, completed 2`` (read from the server's database)."""
    online = site.online()
    ids = [d.id for d in site.devices()]
    up = sum(1 for i in ids if online.get(i))
    down = [i for i in ids if not online.get(i)]
    cases = site.cases_by_state()
    ordered = sorted(cases, key=lambda s: STATE_ORDER.index(s) if s in STATE_ORDER else 99)
    text = ", ".join(f"{state} {cases[state]}" for state in ordered) or "none"
    offline = f" (offline: {', '.join(down)})" if down else ""
    return f"online {up}/{len(ids)}{offline} · cases: {text}"


def step_line(result: StepResult, total: int, site: VirtualSite) -> str:
    note = f" — {result.note}" if result.note else ""
    return (
        f"[{result.number}/{total}] {MARKS[result.status]} {result.name} "
        f"({result.seconds:.1f} s){note}\n        {status_line(site)}"
    )


class LiveSummary:
    """Print :func:`status_line` every ``interval_s`` when it changed, until stopped."""

    def __init__(
        self, site: VirtualSite, echo: Callable[[str], None], interval_s: float = 5.0
    ) -> None:
        self.site, self.echo, self.interval_s = site, echo, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="linli-sim-summary", daemon=True)
        self._last = ""

    def start(self) -> LiveSummary:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                line = status_line(self.site)
            except Exception as err:  # noqa: BLE001 -- the summary must not kill the site
                line = f"(summary unavailable: {type(err).__name__})"
            if line != self._last:
                self.echo(line)
                self._last = line
