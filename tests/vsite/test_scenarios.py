"""The scenario library, each run by the real `linli sim run` on a new virtual site: Mosquitto
from the site's generated config, `linli server run`, and every kiosk and locker as its own
`linli kiosk run` / `linli locker run` process against the emulators (ptys, the receipt printer
on TCP, a private cupsd queue); the people act through the kiosk's control socket, the server's
pages and API, the lock boards and the scanners. Also: a failing expectation and a failing step
exit non-zero naming them, and a wrong scenario file is refused before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hardware_sim.vsite.scenario import (
    ACTIONS,
    FAULTS,
    ScenarioError,
    Step,
    TogetherArgs,
    library,
    load_scenario,
    parse_scenario,
)

pytestmark = pytest.mark.timeout(420)

LINLI = [sys.executable, "-m", "linli"]


def sim_run(path: Path | str, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINLI, "sim", "run", str(path), "--workdir", str(workdir), *extra],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def _logs(workdir: Path) -> str:
    tails = []
    for log in sorted((workdir / "logs").glob("*.log")):
        tails.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join(tails)


@pytest.mark.parametrize("path", library(), ids=lambda p: p.stem)
def test_library_scenario_passes(path: Path, tmp_path: Path) -> None:
    done = sim_run(path, tmp_path / "site", "--json")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{_logs(tmp_path / 'site')}"
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["steps"] and all(s["status"] == "ok" for s in report["steps"])
    assert report["expectations"] and all(e["ok"] for e in report["expectations"])
    names = {e["name"] for e in report["expectations"]}
    assert "all devices online" in names
    assert any(n.startswith("nothing lost from ") for n in names)


def _all_steps() -> list[Step]:
    steps = []
    for plan in (load_scenario(p) for p in library()):
        for step in plan.steps:
            steps.extend(step.args.steps if isinstance(step.args, TogetherArgs) else [step])
            steps.append(step)
    return steps


def test_the_library_covers_every_flow_and_fault() -> None:
    steps = _all_steps()
    actions = {step.action for step in steps}
    assert actions == set(ACTIONS), f"actions no scenario uses: {set(ACTIONS) - actions}"
    faults = {step.args.kind for step in steps if step.action == "fault"}
    assert faults == set(FAULTS), f"faults no scenario injects: {set(FAULTS) - faults}"
    reads = {step.args.read for step in steps if step.action == "fault"
             and step.args.kind == "reader_fault"}  # fmt: skip
    assert reads == {"corrupt", "silent", "garbage", "refused"}
    hows = {(step.action, step.args.how) for step in steps
            if step.action in ("collect", "return")}  # fmt: skip
    assert hows == {("collect", "online"), ("collect", "offline"), ("return", "online"),
                    ("return", "offline")}  # fmt: skip
    outcomes = {(step.action, step.args.outcome) for step in steps
                if step.action in ("apply", "print_application", "pickup", "collect")}  # fmt: skip
    assert outcomes == {("apply", "filed"), ("apply", "refused"),
                        ("collect", "collected"), ("collect", "refused"),
                        ("print_application", "printed"), ("print_application", "not_printable"),
                        ("pickup", "collected"), ("pickup", "refused")}  # fmt: skip
    decisions = {step.args.decision for step in steps if step.action == "decide"}
    assert decisions == {"accept", "done", "reject"}


FAILING = """
name: an expectation that cannot hold
site: {kiosks: 0, lockers: 1}
steps:
  - deposit: {locker: locker-1, resident: 0, case: c1}
expect:
  cases: {completed: 1}
  within_s: 3
"""

STEP_FAILS = """
name: a step that cannot be done
site: {kiosks: 0, lockers: 1}
steps:
  - deposit: {locker: locker-1, resident: 0, case: c1}
  - together:
      - process: {case: c1}
      - wait: 0.1
  - pickup: {case: c1}
"""


def test_a_failing_expectation_exits_1_and_names_it(tmp_path: Path) -> None:
    scenario = tmp_path / "failing.yaml"
    scenario.write_text(FAILING, encoding="utf-8")
    done = sim_run(scenario, tmp_path / "site")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "FAILED: expectation cases by state did not hold" in done.stdout
    assert "wanted {'completed': 1}, found {'assigned': 1}" in done.stdout


def test_a_failing_step_exits_1_names_the_step_and_skips_the_rest(tmp_path: Path) -> None:
    """The worker cannot start processing a case whose documents are still in the locker; the
    step is a ``together`` whose other part succeeds, and the report names the part that
    failed."""
    scenario = tmp_path / "step.yaml"
    scenario.write_text(STEP_FAILS, encoding="utf-8")
    done = sim_run(scenario, tmp_path / "site", "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [s["status"] for s in report["steps"]] == ["ok", "failed", "not run"]
    assert "HTTP 409" in report["steps"][1]["note"]
    assert report["steps"][1]["note"].startswith("process (case=c1): ")
    assert report["passed"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: [{fly: {}}]", "a step has one action of"),
        ("name: x\nsite: {kiosks: 0}\nsteps: [{lift: kiosk-1}]", "no kiosk-1 on a site"),
        ("name: x\nsteps: [{pickup: {case: c9}}]", "case 'c9' was not deposited before"),
        ("name: x\nsteps: [{fault: {jam: kiosk-1}}]", "jam happens at a locker"),
        ("name: x\nsteps: [{fault: {paper_out: null}}]", "paper_out needs a device"),
        (
            "name: x\nsteps: [{certificate: {kiosk: kiosk-1, resident: 0, colour: red}}]",
            "Extra inputs are not permitted",
        ),
        ("name: x\nsteps: [\n  - {", "not YAML"),
        ("name: x\nsteps: [{read_notice: {kiosk: kiosk-1, title: t}}]", "'t' was not published"),
        ("name: x\nsteps: [{decide: {application: a, decision: done}}]", "'a' was not filed"),
        (
            "name: x\nsteps: [{apply: {resident: 1, kind: difficulty, application: a}},"
            " {decide: {application: a, decision: reject}}]",
            "a rejection needs a reason",
        ),
        (
            "name: x\nsteps: [{deposit: {locker: locker-1, resident: 0, case: c}},"
            " {pickup: {case: c, code: revoked}}]",
            "a revoked code is refused",
        ),
        ("name: x\nsteps: [{together: [{wait: 1}]}]", "at least 2 items"),
        (
            "name: x\nsteps: [{together: [{wait: 1}, {together: [{wait: 1}, {wait: 1}]}]}]",
            "together steps cannot nest",
        ),
        (
            "name: x\nsteps: [{deposit: {locker: locker-1, resident: 0, case: c}},"
            " {tasks: {worker: chen, order: [c, d]}}]",
            "case 'd' was not deposited",
        ),
        ("name: x\nsteps: []", "at least 1 item"),
        ("name: x\nsteps: [{wait: 0}]\nexpect: {within_s: 0}", "greater than 0"),
    ],
)
def test_a_wrong_scenario_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match="<scenario>") as raised:
        parse_scenario(text)
    assert message in str(raised.value)


def test_the_cli_refuses_a_wrong_file_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: [{fly: {}}]\n", encoding="utf-8")
    done = sim_run(bad, tmp_path / "site")
    assert done.returncode == 2
    assert "a step has one action of" in done.stderr
    assert not (tmp_path / "site").exists()
    missing = sim_run("no-such-scenario", tmp_path / "site")
    assert missing.returncode == 2
    assert "no scenario file 'no-such-scenario'" in missing.stderr


def test_scenarios_lists_the_library() -> None:
    done = subprocess.run([*LINLI, "sim", "scenarios"], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    for path in library():
        assert path.stem in done.stdout
