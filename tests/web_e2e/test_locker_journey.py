"""A resident's deposit, a worker's collection and return, and the resident's collection, through
the real pages in Chromium, the real server, a real Mosquitto and the real locker firmware."""

from __future__ import annotations

import re
import time

from PIL import Image
from playwright.sync_api import Browser, Page
from pyzbar.pyzbar import decode
from sqlalchemy import select

from sync_server.domain_models import AuditEntry, Case, Notification
from tests.locker_crash.rig import wait_for
from tests.web_e2e.conftest import (
    DEVICE_ID,
    SCREENSHOTS,
    WORKER_PASSWORD,
    Site,
    phone,
    screenshot,
)


def case_state(site: Site, case_id: str) -> str:
    with site.engine.connect() as conn:
        return str(conn.execute(select(Case.state).where(Case.id == case_id)).scalar_one())


def wait_state(site: Site, case_id: str, state: str) -> None:
    wait_for(lambda: case_state(site, case_id) == state, f"case {case_id} to be {state}", 30,
             site.locker)  # fmt: skip


def open_compartment(site: Site) -> int:
    """The compartment the locker is opening now (a request in progress), once it is open."""
    found: list[int] = []

    def opening() -> bool:
        found[:] = [n for n, status in site.locker.requests_in_progress() if status == "opened"]
        return bool(found)

    wait_for(opening, "the locker to open a compartment", 30, site.locker)
    return found[0]


def read_qr(page: Page, selector: str, name: str) -> str:
    """What a scanner reads off the QR the page shows (a screenshot decoded by zbar)."""
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator(selector).screenshot(path=str(path))
    codes = decode(Image.open(path))
    assert codes, f"no QR code readable in {path}"
    return codes[0].data.decode()


def test_deposit_collect_return_and_collect_again(site: Site, browser: Browser) -> None:
    # -- the resident scans the locker's QR and deposits ------------------------------------------
    resident = phone(browser)
    resident.goto(f"{site.url}/l/{DEVICE_ID}")
    assert resident.inner_text("#locker-name") == "幸福社区1号柜"
    screenshot(resident, "01-locker")
    resident.click("text=居住证明")
    assert "户口簿复印件" in resident.inner_text("#documents")
    resident.fill("#phone", "13800138000")
    resident.check("#consent")
    screenshot(resident, "02-service")
    resident.click("#open-compartment")
    resident.wait_for_selector("#case-state")
    case_id = resident.inner_text("#case-id")
    resident_url = resident.url
    assert re.fullmatch(rf"{site.url}/c/{case_id}/[\w-]+", resident_url)
    number = open_compartment(site)
    screenshot(resident, "03-case-draft")
    site.locker.finish(number)  # documents in, door shut
    resident.click("#confirm-deposit")
    wait_state(site, case_id, "assigned")  # deposited, then the dispatcher offered it
    resident.reload()
    assert resident.get_attribute("#case-state", "data-state") == "assigned"
    assert resident.inner_text("#compartment") == str(number)

    # -- the grid worker logs in, accepts, opens online, processes, returns the result ------------
    worker = phone(browser)
    worker.goto(f"{site.url}/w")
    assert worker.url.endswith("/w/login")
    screenshot(worker, "04-worker-login")
    worker.fill("#username", "chen")
    worker.fill("#password", WORKER_PASSWORD)
    worker.click("#login")
    worker.wait_for_selector(f".task[data-case='{case_id}']")
    screenshot(worker, "05-worker-tasks")
    worker.click(f".task[data-case='{case_id}'] button.ack")
    worker.click(f"a[href='/w/c/{case_id}']")
    screenshot(worker, "06-worker-case")
    worker.click("#open-online")
    assert open_compartment(site) == number
    site.locker.finish(number)  # documents taken, door shut
    wait_state(site, case_id, "collected")
    worker.goto(f"{site.url}/w/c/{case_id}")
    worker.click("#mark-processing")
    worker.click("#return-result")
    result = open_compartment(site)
    site.locker.finish(result)  # result in, door shut
    wait_state(site, case_id, "result_stored")

    # -- the resident is told and collects with the QR at the scanner -----------------------------
    def notifications() -> dict[str, Notification]:
        with site.engine.connect() as conn:
            return {
                row.template: row
                for row in conn.execute(select(Notification).where(Notification.case_id == case_id))
            }

    # The notice is sent by the server's effects pool just after the state change: wait for it.
    wanted = {"case.deposited", "case.result_ready"}
    wait_for(lambda: wanted <= set(notifications()), "the result_ready notice", 10, site.locker)
    sent = notifications()
    assert wanted <= set(sent)
    link = sent["case.result_ready"].params["link"]
    assert link.startswith(f"{site.url}/c/{case_id}/")
    resident.goto(link)  # the SMS link works too
    resident.click("#show-collect")
    screenshot(resident, "07-collect")
    text = read_qr(resident, "#collect-qr svg", "07-collect-code")
    assert text.startswith("LQ1:")
    site.locker.scan(text)
    assert open_compartment(site) == result
    site.locker.finish(result)
    wait_state(site, case_id, "completed")
    resident.goto(resident_url)
    assert resident.get_attribute("#case-state", "data-state") == "completed"
    screenshot(resident, "08-case-completed")

    # -- the office sees it: admin pages ----------------------------------------------------------
    office = phone(browser)
    office.set_viewport_size({"width": 1280, "height": 900})
    office.goto(f"{site.url}/w/login")
    office.fill("#username", "admin")
    office.fill("#password", WORKER_PASSWORD)
    office.click("#login")
    office.wait_for_url(f"{site.url}/admin")
    assert office.inner_text("#online") == "1"
    screenshot(office, "11-admin-overview")
    office.goto(f"{site.url}/admin/cases/{case_id}")
    assert "138****8000" in office.content() and "13800138000" not in office.content()
    screenshot(office, "12-admin-case")
    for name in ("devices", "workers", "stats", "services"):
        office.goto(f"{site.url}/admin/{name}")
        screenshot(office, f"13-admin-{name}")
    # A certificate QR check, as anyone would open it (here: a locker code, refused plainly).
    office.goto(f"{site.url}/v?c={text}")
    assert office.inner_text("#verdict").startswith("✘")
    screenshot(office, "14-verify-refused")
    # The credential is spent: showing it again opens nothing.
    site.locker.scan(text)
    time.sleep(1.0)
    assert site.locker.requests_in_progress() == []


def test_offline_codes_and_refused_scans(site: Site, browser: Browser) -> None:
    """The worker's offline codes (read off the screen) open the locker through its scanner; a
    garbage QR and a replayed code are refused and the refusals reach the server's audit."""
    resident = phone(browser)
    resident.goto(f"{site.url}/l/{DEVICE_ID}/s/subsidy")
    resident.check("#consent")
    resident.click("#open-compartment")
    case_id = resident.inner_text("#case-id")
    number = open_compartment(site)
    site.locker.finish(number)
    wait_state(site, case_id, "assigned")

    worker = phone(browser)
    worker.goto(f"{site.url}/w/login")
    worker.fill("#username", "chen")
    worker.fill("#password", WORKER_PASSWORD)
    worker.click("#login")
    worker.goto(f"{site.url}/w/c/{case_id}/offline-open")
    screenshot(worker, "09-worker-offline-code")
    code = read_qr(worker, "#code-qr svg", "09-worker-offline-code-qr")
    site.locker.scan("https://example.com/not-a-credential")
    site.locker.scan(code)
    assert open_compartment(site) == number
    site.locker.finish(number)
    wait_state(site, case_id, "collected")
    site.locker.scan(code)  # replayed

    worker.goto(f"{site.url}/w/c/{case_id}/deposit-code")
    deposit = read_qr(worker, "#code-qr svg", "10-worker-deposit-code-qr")
    site.locker.scan(deposit)
    result = open_compartment(site)
    site.locker.finish(result)
    wait_state(site, case_id, "result_stored")

    def refusals() -> list[str]:
        with site.engine.connect() as conn:
            return [
                str(d["reason"])
                for (d,) in conn.execute(
                    select(AuditEntry.detail).where(AuditEntry.action == "credential.refused")
                )
            ]

    wait_for(lambda: sorted(refusals()) == ["already-used", "not-a-credential"],
             "both refusals to reach the server", 30, site.locker)  # fmt: skip
