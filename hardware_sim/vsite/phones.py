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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from device.errors import LinliError

RETRY_S = 20.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACK = re.compile(r'action="/w/a/(\d+)/ack"')
_CODE = re.compile(r'id="code-qr" data-code="([^"]+)"')
_TASK = re.compile(r'<li class="card task"[^>]*data-case="([^"]+)"')
_APPLICATION = re.compile(r"/a/(A[0-9A-Z]{9})/([A-Za-z0-9_-]+)$")
_CASE_LINK = re.compile(r"/c/(C[0-9A-Z]{9})/([A-Za-z0-9_-]+)")
_OPTION = re.compile(r'<option value="(\d+)">([^<（·]+)')
_LIVE_CREDENTIAL = re.compile(r'action="/admin/credentials/([^"/]+)/revoke"')


class PhoneError(LinliError, RuntimeError):
    """A page or API answered with an error the person could not get past (``status``: the
    HTTP status, when there was an answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        detail = response.text[:300].replace("\n", " ")
        raise PhoneError(f"{what}: HTTP {response.status_code} {detail}", response.status_code)
    return response


@dataclass
class ResidentCase:
    """A case as its resident's phone holds it (the id and the private token)."""

    id: str
    token: str


@dataclass
class ResidentApplication:
    """An online application as its resident's phone holds it (number and status-link token)."""

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

    def apply(
        self,
        kind: str,
        name: str,
        id_number: str,
        fields: dict[str, str],
        read_code: Callable[[], str],
    ) -> ResidentApplication:
        """Fill ``/apply/{kind}``: 获取验证码 (the code comes by SMS: ``read_code``), then 提交申请.
        The status page's link is the resident's key to the application."""
        path = f"/apply/{kind}"
        _check(self.client.get(path), f"the {kind} application form")
        form = {"name": name, "id_number": id_number, "phone": self.phone_number or "", **fields}
        _check(self.client.post(path, data={**form, "action": "code"}), "获取验证码")
        reply = self.client.post(
            path, data={**form, "action": "submit", "code": read_code(), "consent": "yes"}
        )
        found = _APPLICATION.search(reply.headers.get("location", ""))
        if reply.status_code != 303 or found is None:
            _check(reply, f"submitting the {kind} application")
            raise PhoneError(f"the {kind} application was not filed (HTTP {reply.status_code})")
        return ResidentApplication(found.group(1), found.group(2))

    def application_page(self, application: ResidentApplication) -> str:
        path = f"/a/{application.id}/{application.token}"
        return _check(self.client.get(path), f"application {application.id}").text

    @staticmethod
    def case_from_link(text: str) -> ResidentCase:
        """The case of the link in an SMS (``.../c/{case}/{token}``)."""
        found = _CASE_LINK.search(text)
        if found is None:
            raise PhoneError("the message carries no case link")
        return ResidentCase(found.group(1), found.group(2))

    def collect_code(self, case: ResidentCase) -> str:
        """The pickup QR's text (a new single-use ``collect`` credential)."""
        reply = self.client.post(
            f"/api/v1/cases/{case.id}/credential", headers={"X-Case-Token": case.token}
        )
        return str(_check(reply, f"collect code of case {case.id}").json()["text"])


class _StaffBrowser:
    """A logged-in browser on the server's staff pages (session cookie + CSRF), as a grid
    worker's phone or the office's computer is."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10, follow_redirects=True)
        self.username = username
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

    def _get(self, path: str, what: str) -> str:
        return _check(self.client.get(path), what).text

    def _submit(self, page: str, target: str, what: str, **fields: str) -> httpx.Response:
        """Post the form of ``page`` (its CSRF token) to ``target`` with ``fields``."""
        form = {"csrf": self._csrf(self._get(page, what)), **fields}
        return _check(self.client.post(target, data=form), what)


class WorkerPhone(_StaffBrowser):
    """A grid worker's phone on the worker pages (session cookie + CSRF, as the browser)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        super().__init__(base_url, username, password)
        self.retries = 0

    def tasks(self) -> str:
        return self._get("/w", "the task list")

    def has_task(self, case_id: str) -> bool:
        return f'data-case="{case_id}"' in self.tasks()

    def task_order(self) -> list[str]:
        """The cases of the task list, top to bottom."""
        return _TASK.findall(self.tasks())

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
            page = self._get(f"/w/c/{case_id}", f"case {case_id}")
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
        page = self._get(f"/w/c/{case_id}/{path}", f"{path} of case {case_id}")
        found = _CODE.search(page)
        if found is None:
            raise PhoneError(f"no code on the {path} page of case {case_id}")
        return html.unescape(found.group(1))


class OfficeBrowser(_StaffBrowser):
    """The community office's browser on the admin pages (``/admin``)."""

    def decide(self, application_id: str, action: str, reason: str = "") -> None:
        """受理 (``accept``), 办结 (``done``) or 不予通过 (``reject``, with ``reason``)."""
        page = f"/admin/applications/{application_id}"
        fields = {"reason": reason} if reason else {}
        self._submit(page, f"{page}/{action}", f"{action} application {application_id}", **fields)

    def publish_notice(self, title: str, body: str, valid_until: str, community: str = "") -> str:
        """Publish a notice; its key (the kiosk's notice_item)."""
        self._submit(
            "/admin/notices",
            "/admin/notices",
            f"publishing notice {title!r}",
            title=title,
            body=body,
            valid_until=valid_until,
            community=community,
        )
        page = self._get("/admin/notices", "the notices page")
        for row in page.split("<tr data-notice=")[1:]:
            key = row.split('"', 2)[1]
            if f"<strong>{html.escape(title)}</strong>" in row:
                return key
        raise PhoneError(f"notice {title!r} is not on the notices page after publishing")

    def cancel(self, case_id: str, reason: str = "resident_request") -> None:
        page = f"/admin/cases/{case_id}"
        self._submit(page, f"{page}/cancel", f"cancelling case {case_id}", reason=reason)

    def reassign(self, case_id: str, worker_name: str) -> None:
        """改派 to the worker shown as ``worker_name`` in the page's list."""
        page = f"/admin/cases/{case_id}"
        options = dict((n.strip(), v) for v, n in _OPTION.findall(self._get(page, "the case")))
        if worker_name not in options:
            raise PhoneError(f"case {case_id} cannot be reassigned to {worker_name} "
                             f"(the page offers: {', '.join(options) or 'nobody'})")  # fmt: skip
        self._submit(
            page, f"{page}/reassign", f"reassigning {case_id}", worker=options[worker_name]
        )

    def revoke_credentials(self, case_id: str) -> list[str]:
        """吊销 every live credential of the case (a resident lost the phone); their ``cti``."""
        page = f"/admin/credentials?case={case_id}&live=1"
        ctis = _LIVE_CREDENTIAL.findall(self._get(page, f"credentials of {case_id}"))
        for cti in ctis:
            self._submit(page, f"/admin/credentials/{cti}/revoke", f"revoking {cti}")
        return ctis

    def device_command(self, device_id: str, action: str, compartment: int | None = None) -> None:
        """A command from the device page (``clear_fault``, ``disable``, ``enable``, ``ping``)."""
        page = f"/admin/devices/{device_id}"
        fields = {"action": action}
        if compartment is not None:
            fields["compartment"] = str(compartment)
        self._submit(page, f"{page}/command", f"{action} at {device_id}", **fields)
