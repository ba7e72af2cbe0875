"""The phones of the virtual site's people: HTTP clients doing what the pages' buttons do.

A resident's phone uses the resident API the mobile page calls (``/api/v1``, the case token in
``X-Case-Token``); a grid worker's phone logs in to the worker pages and posts their forms with
the session cookie and the form's CSRF token, as the browser would. People who want to watch
open the same pages in a browser (``linli sim site`` prints their addresses).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from device.errors import LinliError

RETRY_S = 20.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACK = re.compile(r'action="/w/a/(\d+)/ack"')
_CODE = re.compile(r'id="code-qr" data-code="([^"]+)"')


class PhoneError(LinliError, RuntimeError):
    """A page or API answered with an error the person could not get past."""


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        detail = response.text[:300].replace("\n", " ")
        raise PhoneError(f"{what}: HTTP {response.status_code} {detail}")
    return response


@dataclass
class ResidentCase:
    """A case as its resident's phone holds it (the id and the private token)."""

    id: str
    token: str


class ResidentPhone:
    """A resident's phone on the server's resident API."""

    def __init__(self, base_url: str, phone_number: str | None = None) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.phone_number = phone_number

    def close(self) -> None:
        self.client.close()

    def services(self, locker: str) -> list[str]:
        """The services the locker's QR page offers (ids)."""
        reply = _check(self.client.get(f"/api/v1/lockers/{locker}"), f"locker page {locker}")
        return [str(s["id"]) for s in reply.json()["services"]]

    def start_case(self, locker: str, service: str) -> ResidentCase:
        """Choose ``service`` at ``locker``: the server asks the locker for a compartment."""
        body: dict[str, Any] = {"service": service, "phone": self.phone_number}
        reply = _check(
            self.client.post(f"/api/v1/lockers/{locker}/cases", json=body),
            f"opening a {service} case at {locker}",
        ).json()
        if not reply["compartment_requested"]:
            raise PhoneError(f"{locker} is offline: the server could not ask it for a compartment")
        return ResidentCase(str(reply["case"]), str(reply["token"]))

    def confirm(self, case: ResidentCase) -> None:
        """ "The documents are in and the door is shut"."""
        _check(
            self.client.post(
                f"/api/v1/cases/{case.id}/confirm", headers={"X-Case-Token": case.token}
            ),
            f"confirming case {case.id}",
        )

    def reopen(self, case: ResidentCase) -> None:
        """Tap 重新开柜 on the case page (no compartment opened for the documents)."""
        _check(self.client.post(f"/c/{case.id}/{case.token}/reopen"), f"reopening {case.id}")

    def case(self, case: ResidentCase) -> dict[str, Any]:
        reply = self.client.get(f"/api/v1/cases/{case.id}", headers={"X-Case-Token": case.token})
        data: dict[str, Any] = _check(reply, f"case {case.id}").json()
        return data

    def collect_code(self, case: ResidentCase) -> str:
        """The pickup QR's text (a new single-use ``collect`` credential)."""
        reply = self.client.post(
            f"/api/v1/cases/{case.id}/credential", headers={"X-Case-Token": case.token}
        )
        return str(_check(reply, f"collect code of case {case.id}").json()["text"])


class WorkerPhone:
    """A grid worker's phone on the worker pages (session cookie + CSRF, as the browser)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10, follow_redirects=True)
        self.username = username
        self.retries = 0
        reply = _check(
            self.client.post("/w/login", data={"username": username, "password": password}),
            f"{username} logging in",
        )
        if "/w/login" in str(reply.url):
            raise PhoneError(f"{username} could not log in")

    def close(self) -> None:
        self.client.close()

    def _csrf(self, page: str) -> str:
        found = _CSRF.search(page)
        if found is None:
            raise PhoneError("no form on the page (logged out?)")
        return html.unescape(found.group(1))

    def tasks(self) -> str:
        return _check(self.client.get("/w"), "the task list").text

    def has_task(self, case_id: str) -> bool:
        return f'data-case="{case_id}"' in self.tasks()

    def accept(self, case_id: str) -> bool:
        """Tap 接单 on ``case_id``'s offer; False when there is no open offer for it."""
        page = self.tasks()
        for item in page.split('<li class="card task"')[1:]:
            found = _ACK.search(item.split("</li>", 1)[0])
            if f'data-case="{case_id}"' in item[:80] and found is not None:
                _check(
                    self.client.post(f"/w/a/{found.group(1)}/ack", data={"csrf": self._csrf(page)}),
                    f"accepting case {case_id}",
                )
                return True
        return False

    def _post(self, case_id: str, action: str, *, retry_s: float = RETRY_S) -> httpx.Response:
        """Press ``action`` on the case page; while the page says the locker is offline (503),
        press again every second for ``retry_s`` (as a worker standing at the locker would)."""
        deadline = time.monotonic() + retry_s
        while True:
            page = _check(self.client.get(f"/w/c/{case_id}"), f"case {case_id}").text
            reply = self.client.post(f"/w/c/{case_id}/{action}", data={"csrf": self._csrf(page)})
            if reply.status_code != 503 or time.monotonic() > deadline:
                return _check(reply, f"{self.username}: {action} on case {case_id}")
            self.retries += 1
            time.sleep(1.0)

    def open_online(self, case_id: str) -> None:
        """开柜 (online): the server sends ``locker.open`` to the locker."""
        self._post(case_id, "open")

    def mark_processing(self, case_id: str) -> None:
        self._post(case_id, "processing")

    def confirm_collected(self, case_id: str) -> None:
        self._post(case_id, "collected")

    def return_result(self, case_id: str) -> None:
        """送回结果 (online): the server asks the locker for a compartment for the result."""
        self._post(case_id, "return")

    def offline_code(self, case_id: str, kind: str) -> str:
        """The text of the offline QR (``open``: 离线开柜码, ``deposit``: 离线存件码)."""
        path = {"open": "offline-open", "deposit": "deposit-code"}[kind]
        page = _check(self.client.get(f"/w/c/{case_id}/{path}"), f"{path} of case {case_id}")
        found = _CODE.search(page.text)
        if found is None:
            raise PhoneError(f"no code on the {path} page of case {case_id}")
        return html.unescape(found.group(1))
