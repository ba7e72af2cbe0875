"""`linli sim site`, `linli sim run`, `linli sim scenarios`: the virtual site and its scenarios."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import click

from device.errors import LinliError

DAY = "a-day"
"""The library scenario `linli sim site` (and ./run.sh) plays unless told otherwise."""


def _scenario_path(given: str) -> Path:
    """A file, or the name of a library scenario (``a-day``: hardware_sim/scenarios/a-day.yaml)."""
    from hardware_sim.vsite.scenario import LIBRARY, ScenarioError

    path = Path(given)
    if path.exists():
        return path
    named = LIBRARY / f"{given}.yaml"
    if named.exists():
        return named
    raise ScenarioError(f"no scenario file {given!r} and no library scenario of that name "
                        "(linli sim scenarios lists them)")  # fmt: skip


def _workdir(given: Path | None) -> tuple[Path, bool]:
    """The site's directory and whether it is temporary (removed at the end)."""
    if given is not None:
        return given, False
    return Path(tempfile.mkdtemp(prefix="linli-site-")) / "site", True


def _fail(err: Exception, code: int = 2) -> None:
    click.echo(f"linli sim: {err}", err=True)
    sys.exit(code)


@click.command("site")
@click.option("--kiosks", type=click.IntRange(0, 20), default=1, show_default=True)
@click.option("--lockers", type=click.IntRange(0, 20), default=2, show_default=True)
@click.option("--scenario", "scenario", default=DAY, show_default=True,
              help="A scenario file or library name to play once the site is up; "
                   "'none' plays nothing (use the pages and the ptys yourself).")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the site lives (must be new or empty; default: a temporary directory "
                   "removed at the end).")  # fmt: skip
@click.option("--http-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The server's pages (0: any free port).")  # fmt: skip
@click.option("--window/--headless", default=False, show_default=True,
              help="Kiosks with their Kivy window (needs a display) or headless.")  # fmt: skip
@click.option("--duration", type=float, default=None,
              help="Seconds to run after the scenario (default: until Ctrl-C).")  # fmt: skip
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Seconds between summary lines while the site runs.")  # fmt: skip
def site(  # noqa: PLR0917  # one parameter per click option
    kiosks: int,
    lockers: int,
    scenario: str,
    workdir: Path | None,
    http_port: int,
    window: bool,
    duration: float | None,
    interval: float,
) -> None:
    """Run a whole virtual site: Mosquitto, the server, kiosks and lockers on simulated hardware.

    Each device is its own process with its own store, as on its own Raspberry Pi. The site's
    pages, accounts, ptys and logs are printed first; then the scenario plays (a resident's and a
    grid worker's day by default) with one line per step and a summary (devices online, cases by
    state) every --interval seconds. Ctrl-C stops everything.
    """
    from hardware_sim.vsite.runner import run_scenario
    from hardware_sim.vsite.scenario import load_scenario
    from hardware_sim.vsite.site import SiteOptions, VirtualSite
    from hardware_sim.vsite.summary import LiveSummary, step_line

    try:
        plan = None if scenario == "none" else load_scenario(_scenario_path(scenario))
    except LinliError as err:
        _fail(err)
        return
    if plan is not None and (plan.site.kiosks > kiosks or plan.site.lockers > lockers):
        kiosks, lockers = max(kiosks, plan.site.kiosks), max(lockers, plan.site.lockers)
        click.echo(f"the scenario needs {plan.site.kiosks} kiosks and {plan.site.lockers} "
                   f"lockers: starting {kiosks} and {lockers}", err=True)  # fmt: skip
    root, temporary = _workdir(workdir)
    options = SiteOptions(kiosks=kiosks, lockers=lockers, http_port=http_port, headless=not window)
    virtual = VirtualSite(root, options)
    stop = threading.Event()
    try:
        virtual.start(progress=lambda line: click.echo(line, err=True))
        click.echo(json.dumps(virtual.describe(), ensure_ascii=False, indent=2))
        summary = LiveSummary(virtual, lambda line: click.echo(line, err=True), interval)
        if plan is not None:
            click.echo(f"scenario: {plan.name}", err=True)
            report = run_scenario(
                virtual, plan, lambda r, total: click.echo(step_line(r, total, virtual), err=True)
            )
            click.echo(report.to_text(), err=True)
        summary.start()
        try:
            stop.wait(duration) if duration is not None else _until_interrupted(stop)
        finally:
            summary.stop()
    except KeyboardInterrupt:
        pass
    except LinliError as err:
        _fail(err, 1)
    finally:
        click.echo("stopping the site", err=True)
        virtual.close()
        if temporary:
            shutil.rmtree(root.parent, ignore_errors=True)


def _until_interrupted(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        pass


@click.command("run")
@click.argument("scenario")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the site here (logs, stores, printed pages) instead of a temporary "
                   "directory.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run(scenario: str, workdir: Path | None, as_json: bool) -> None:
    """Run one scenario (a YAML file or a library name) on a new virtual site and report.

    Exit status 0 when every step was done and every expectation held; 1 when not (the report
    names the step that failed or the expectation that did not hold); 2 when the scenario file
    is wrong or the site cannot start.
    """
    from hardware_sim.vsite.runner import report_json, run_scenario
    from hardware_sim.vsite.scenario import load_scenario
    from hardware_sim.vsite.site import SiteOptions, VirtualSite

    try:
        plan = load_scenario(_scenario_path(scenario))
    except LinliError as err:
        _fail(err)
        return
    root, temporary = _workdir(workdir)
    virtual = VirtualSite(
        root, SiteOptions(kiosks=plan.site.kiosks, lockers=plan.site.lockers, http_port=0)
    )
    try:
        try:
            virtual.start(progress=lambda line: click.echo(line, err=True))
        except (LinliError, OSError) as err:
            _fail(err)
        report = run_scenario(
            virtual,
            plan,
            lambda r, total: click.echo(f"[{r.number}/{total}] {r.status}: {r.name}", err=True),
        )
    finally:
        virtual.close()
        if temporary:
            shutil.rmtree(root.parent, ignore_errors=True)
    click.echo(report_json(report) if as_json else report.to_text())
    sys.exit(0 if report.passed else 1)


@click.command("scenarios")
def scenarios() -> None:
    """List the library's scenarios: name, site size and what each shows."""
    from hardware_sim.vsite.scenario import library, load_scenario

    for path in library():
        plan = load_scenario(path)
        about = " ".join(plan.about.split())
        click.echo(f"{path.stem:<28} {plan.site.kiosks}k/{plan.site.lockers}l  {plan.name}")
        if about:
            click.echo(f"{'':<28} {about[:110]}")
