"""Online applications (网上申请, docs/applications.md): the kinds a resident may file on their
phone, the validation of a form, and the application's life ``submitted -> accepted -> done`` (or
``rejected``, with a reason), every change audited.

A kind names the kiosk certificate template that prints it (``template``; None: the server keeps
the application, there is nothing to print) and how its fields become that template's household
data (``kiosk_data``). The kiosk gets a template only once the office has finished the
application (``done``): the certificates say the community checked the facts.

Functions take a :class:`~sqlalchemy.Connection` inside the caller's transaction, like
:mod:`sync_server.cases`, so a change and its audit entry commit together.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, Row, Table, insert, select, update

from device.protocol import id_number_problems
from sync_server.cases import CASE_ID_ALPHABET, audit, hash_token
from sync_server.domain_models import Application, Resident
from sync_server.errors import ServerError
from sync_server.phones import mask_mobile, normalize_mobile
from sync_server.records.validate import mask_id_number, mask_name

__all__ = [
    "APPLICATION_PATH",
    "KINDS",
    "MAX_LISTED",
    "STATUS_TEXT",
    "TRANSITIONS",
    "ApplicationError",
    "ApplicationInputError",
    "ApplicationNotFoundError",
    "ApplicationRecord",
    "ApplicationStateError",
    "FieldSpec",
    "IdentityMismatchError",
    "Kind",
    "Submission",
    "check_access",
    "check_phone",
    "file_application",
    "get_application",
    "kiosk_item",
    "list_for_resident",
    "new_application_id",
    "status_text",
    "transition",
    "validate_submission",
]

APPLICATION_PATH: Final = r"^A[2-9A-HJ-NP-Z]{9}$"
"""An application number: ``A`` and 9 characters of the case alphabet (no 0/O, 1/I)."""
MAX_LISTED: Final = 20
"""At most this many applications (the newest) are listed for one resident."""
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "submitted": frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"done", "rejected"}),
    "done": frozenset(),
    "rejected": frozenset(),
}
STATUS_TEXT: Final = {
    "submitted": "已提交，等待社区受理",
    "accepted": "社区已受理，正在办理",
    "done": "已办结",
    "rejected": "未通过",
}
"""What a resident reads for each status (the kiosk too: at most 64 characters with a reason)."""
_applications = cast(Table, Application.__table__)
_residents = cast(Table, Resident.__table__)
_WHITESPACE = re.compile(r"\s+")


# -- errors ---------------------------------------------------------------------------------------


class ApplicationError(ServerError):
    """Base of the online applications' errors."""


class ApplicationInputError(ApplicationError, ValueError):
    """The form is not valid: ``problems`` are Chinese sentences for the resident, by field."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(f"the form has problems in {', '.join(sorted(problems))}")
        self.problems = dict(problems)


class IdentityMismatchError(ApplicationError, PermissionError):
    """The name and ID number are not a resident of these records (which one is wrong, or
    whether the ID number is known at all, is not said)."""


class ApplicationNotFoundError(ApplicationError, LookupError):
    """No such application, or a wrong access token: the two look the same."""


class ApplicationStateError(ApplicationError, ValueError):
    """The application is not in a status where this may happen, or changed meanwhile."""


# -- kinds ----------------------------------------------------------------------------------------


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _one_line(value: str) -> str:
    """Free text as one line: it is printed inside a sentence of a certificate."""
    return _WHITESPACE.sub(" ", value).strip()


def _money(value: Any) -> int | float:
    """Yuan to the fen, written ``1500`` rather than ``1500.0`` on a certificate."""
    amount = round(float(value), 2)
    return int(amount) if amount.is_integer() else amount


class DifficultyFields(_Fields):
    monthly_income: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]
    reason: Annotated[str, Field(min_length=2, max_length=200)]

    @field_validator("monthly_income", mode="after")
    @classmethod
    def _yuan(cls, value: float) -> Any:
        return _money(value)

    @field_validator("reason", mode="before")
    @classmethod
    def _reason_one_line(cls, value: Any) -> Any:
        return _one_line(value) if isinstance(value, str) else value


class NoFields(_Fields):
    pass


class NoteFields(_Fields):
    note: Annotated[str, Field(max_length=200)] = ""

    @field_validator("note", mode="before")
    @classmethod
    def _note_one_line(cls, value: Any) -> Any:
        return _one_line(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class FieldSpec:
    """One field of a kind's form: how the page asks for it and what it says when it is wrong."""

    name: str
    label: str
    input: str  # "number", "text" or "textarea"
    problem: str
    hint: str = ""
    required: bool = True
    max_length: int = 200


@dataclass(frozen=True)
class Kind:
    """One kind of application. ``kiosk_data(fields, phone)`` is laid over the resident's
    household record by the kiosk for ``template``'s household fields."""

    name: str
    title: str
    description: str
    template: str | None
    model: type[_Fields]
    fields: tuple[FieldSpec, ...]
    kiosk_data: Callable[[Mapping[str, Any], str], dict[str, Any]]


KINDS: Final[Mapping[str, Kind]] = {
    k.name: k
    for k in (
        Kind(
            "difficulty",
            "生活困难证明申请",
            "申请社区出具生活困难证明，用于临时救助、助学、减免等。社区核实后可在社区服务机打印。",
            "difficulty",
            DifficultyFields,
            (
                FieldSpec(
                    "monthly_income",
                    "家庭人均月收入（元）",
                    "number",
                    "请填写0到100000之间的金额（元）",
                ),
                FieldSpec(
                    "reason",
                    "困难原因",
                    "textarea",
                    "请用2到200个字说明困难原因",
                    hint="如：家庭成员患重病，医疗支出较大",
                ),
            ),
            lambda f, _phone: {
                "difficulty": {"monthly_income": _money(f["monthly_income"]), "reason": f["reason"]}
            },
        ),
        Kind(
            "elderly_subsidy",
            "高龄津贴申领",
            "80周岁以上老人申领高龄津贴。社区审核后可在社区服务机打印资格认证表。",
            "elderly_subsidy",
            NoFields,
            (),
            lambda _f, phone: {"phone": phone},
        ),
        Kind(
            "residence_permit",
            "居住证办理预约",
            "预约到社区办理居住证。社区受理后，请凭申请编号和身份证到社区居委会办理，无需打印。",
            None,
            NoteFields,
            (
                FieldSpec(
                    "note",
                    "预约说明（可不填）",
                    "textarea",
                    "预约说明最多200个字",
                    hint="如：希望办理的时间",
                    required=False,
                ),
            ),
            lambda _f, _phone: {},
        ),
    )
}
"""Every kind by name (``/apply/{kind}``)."""


@dataclass(frozen=True, repr=False)
class Submission:
    """A validated form: the applicant (normalised) and the kind's fields."""

    kind: Kind
    name: str
    id_number: str
    phone: str
    fields: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"Submission(kind={self.kind.name!r}, id_number={mask_id_number(self.id_number)!r}, "
            f"phone={mask_mobile(self.phone)!r})"
        )


_NAME = re.compile(r"^[\u3400-\u9fff\u00b7\u2022A-Za-z][\u3400-\u9fff\u00b7\u2022A-Za-z .-]*$")


def check_phone(phone: str) -> str:
    """The phone as 11 digits, or :class:`ApplicationInputError` (field ``phone``)."""
    mobile = normalize_mobile(phone or "")
    if mobile is None:
        raise ApplicationInputError({"phone": "手机号应为11位数字，以1开头"})
    return mobile


def validate_submission(
    kind_name: str, name: str, id_number: str, phone: str, fields: Mapping[str, Any]
) -> Submission:
    """The form of ``kind_name`` checked; :class:`ApplicationInputError` lists every problem.

    ``fields`` may carry other keys (the page's own inputs); only the kind's fields are read.
    """
    kind = KINDS.get(kind_name)
    if kind is None:
        raise ApplicationInputError({"kind": "没有这类申请"})
    problems: dict[str, str] = {}
    clean_name = _WHITESPACE.sub("", name or "")
    if not (1 <= len(clean_name) <= 32 and _NAME.match(clean_name)):
        problems["name"] = "请填写身份证上的姓名"
    clean_id = (id_number or "").strip().upper()
    if len(clean_id) > 18 or id_number_problems(clean_id):
        problems["id_number"] = "身份证号码应为18位，请核对（最后一位可能是X）"
    mobile = normalize_mobile(phone or "")
    if mobile is None:
        problems["phone"] = "手机号应为11位数字，以1开头"
    values = {
        spec.name: fields[spec.name]
        for spec in kind.fields
        if spec.name in fields and (spec.required or fields[spec.name] != "")
    }
    checked: dict[str, Any] = {}
    try:
        checked = kind.model.model_validate(values).model_dump()
    except ValidationError as err:
        specs = {spec.name: spec for spec in kind.fields}
        for error in err.errors():
            where = str(error["loc"][0]) if error["loc"] else ""
            spec = specs.get(where)
            problems[where or "form"] = spec.problem if spec else "表单内容有误"
    if problems:
        raise ApplicationInputError(problems)
    assert mobile is not None
    return Submission(kind, clean_name, clean_id, mobile, checked)


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationRecord:
    """An application as stored; ``repr`` masks the applicant (logs)."""

    id: str
    kind: str
    community_id: str
    id_number: str = field(repr=False)
    name: str = field(repr=False)
    phone: str = field(repr=False)
    data: dict[str, Any] = field(repr=False)
    status: str = "submitted"
    reason: str | None = field(default=None, repr=False)
    submitted_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1

    @property
    def title(self) -> str:
        kind = KINDS.get(self.kind)
        return kind.title if kind else self.kind

    @property
    def masked(self) -> dict[str, str]:
        """The applicant as staff lists show them: ``张**``, ``110105********002X``, phone."""
        return {
            "name": mask_name(self.name),
            "id_number": mask_id_number(self.id_number),
            "phone": mask_mobile(self.phone),
        }

    @classmethod
    def from_row(cls, row: Row[Any]) -> ApplicationRecord:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__dataclass_fields__})


def new_application_id() -> str:
    """``A`` and 9 characters of :data:`CASE_ID_ALPHABET` (45 bits), like a case number."""
    return "A" + "".join(secrets.choice(CASE_ID_ALPHABET) for _ in range(9))


def status_text(status: str, reason: str | None = None, *, printable: bool = False) -> str:
    """The status as the resident reads it (at most 64 characters)."""
    text = STATUS_TEXT.get(status, status)
    if status == "done" and printable:
        text += "，可在社区服务机打印"
    if status == "rejected" and reason:
        text += f"：{reason}"
    return text if len(text) <= 64 else text[:63] + "…"


def file_application(
    conn: Connection, now: float, submission: Submission
) -> tuple[ApplicationRecord, str]:
    """Store a ``submitted`` application for a resident of the records; returns it and the token
    of the resident's status link (the database keeps its SHA-256).

    Raises :class:`IdentityMismatchError` unless name and ID number are one resident's; the
    caller audits that refusal in a transaction of its own (this one is rolled back).
    """
    resident = conn.execute(
        select(_residents.c.name, _residents.c.community_id).where(
            _residents.c.id_number == submission.id_number
        )
    ).first()
    if resident is None or not hmac.compare_digest(
        _WHITESPACE.sub("", resident.name).encode(), submission.name.encode()
    ):
        raise IdentityMismatchError("name and ID number are not a resident of these records")
    token = secrets.token_urlsafe(24)
    application_id = new_application_id()
    conn.execute(
        insert(_applications).values(
            id=application_id,
            kind=submission.kind.name,
            community_id=resident.community_id,
            id_number=submission.id_number,
            name=submission.name,
            phone=submission.phone,
            data=submission.fields,
            status="submitted",
            reason=None,
            access_hash=hash_token(token),
            submitted_at=now,
            updated_at=now,
            version=1,
        )
    )
    audit(
        conn,
        now,
        "resident",
        "application.submitted",
        kind=submission.kind.name,
        application=application_id,
        community=resident.community_id,
    )
    return get_application(conn, application_id), token


def get_application(
    conn: Connection, application_id: str, *, for_update: bool = False
) -> ApplicationRecord:
    """The application, or :class:`ApplicationNotFoundError`."""
    query = select(_applications).where(_applications.c.id == application_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise ApplicationNotFoundError(f"no application {application_id!r}")
    return ApplicationRecord.from_row(row)


def check_access(conn: Connection, application_id: str, token: str) -> ApplicationRecord:
    """The application if ``token`` opens it; otherwise :class:`ApplicationNotFoundError` (the
    same for a wrong token and a missing application, so a guessed link learns nothing)."""
    row = conn.execute(select(_applications).where(_applications.c.id == application_id)).first()
    if row is None or not hmac.compare_digest(row.access_hash, hash_token(token)):
        raise ApplicationNotFoundError(f"no application {application_id!r}")
    return ApplicationRecord.from_row(row)


def transition(
    conn: Connection,
    application: ApplicationRecord,
    to: str,
    now: float,
    *,
    actor: str,
    reason: str | None = None,
) -> ApplicationRecord:
    """Move ``application`` to ``to`` (``accepted``, ``done`` or ``rejected``, which needs a
    ``reason`` of 2 to 200 characters the resident will read); audited without the reason
    (free text may name people)."""
    if to not in TRANSITIONS[application.status]:
        raise ApplicationStateError(
            f"application {application.id} cannot go from {application.status} to {to}"
        )
    text = None
    if to == "rejected":
        text = _one_line(reason or "")
        if not 2 <= len(text) <= 200:
            raise ApplicationInputError({"reason": "请用2到200个字说明不予通过的原因"})
    result = conn.execute(
        update(_applications)
        .where(
            _applications.c.id == application.id,
            _applications.c.version == application.version,
        )
        .values(status=to, reason=text, updated_at=now, version=application.version + 1)
    )
    if result.rowcount != 1:
        raise ApplicationStateError(f"application {application.id} changed meanwhile; try again")
    audit(
        conn,
        now,
        actor,
        f"application.{to}",
        application=application.id,
        kind=application.kind,
        **{"from": application.status},
    )
    return get_application(conn, application.id)


def list_for_resident(
    conn: Connection, id_number: str, limit: int = MAX_LISTED
) -> list[ApplicationRecord]:
    """The resident's applications, newest first, at most ``limit``."""
    rows = conn.execute(
        select(_applications)
        .where(_applications.c.id_number == id_number)
        .order_by(_applications.c.submitted_at.desc(), _applications.c.id)
        .limit(limit)
    )
    return [ApplicationRecord.from_row(row) for row in rows]


def kiosk_item(application: ApplicationRecord) -> dict[str, Any]:
    """One item of ``applications.list``, exactly the keys the kiosk accepts: ``template`` and
    ``data`` only once the office has finished it (``done``) and the kind prints."""
    kind = KINDS.get(application.kind)
    printable = kind is not None and kind.template is not None and application.status == "done"
    data: dict[str, Any] = {}
    if printable and kind is not None:
        data = kind.kiosk_data(application.data, application.phone)
    return {
        "id": application.id,
        "title": application.title,
        "status": status_text(application.status, application.reason, printable=printable),
        "submitted_at": application.submitted_at,
        "template": kind.template if printable and kind is not None else None,
        "data": data,
    }
