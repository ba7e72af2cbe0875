"""The public certificate check: is this printed certificate genuine, current and not revoked?

Kiosks print a verification QR whose text is the bare credential ``LQ1:...``
(kiosk_ui/certificates/render.py), not a URL, so a phone camera shows text and opens nothing. The
page ``GET /v`` therefore offers a form to paste (or type) that text; it submits as
``GET /v?c=...``. A kiosk that prints a URL instead would use
:func:`device.credential.verification_url`, ``{site}/V/{escaped text}``, which ``GET /V/...`` and
``GET /v/...`` answer (docs/web.md, "Certificate verification"). ``GET /api/v1/certificates/verify``
gives the same answer as JSON.

What can be checked is what the QR carries (docs/certificates.md): the signature (a kiosk's key,
known to the server), the kind, the serial (``sub``, against ``certificate_revocations``), the
template and the validity dates. The printed text itself is covered only by the salted digest,
which needs the salt the kiosk keeps; so the page tells the reader to compare the serial, the
certificate's name and the date with the paper. The page shows nothing the paper does not: no
resident data is in the QR, and the issuing kiosk and community come from the site's own tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Table, select

from device.credential import (
    MAX_TEXT_LENGTH,
    CredentialClaims,
    CredentialError,
    VerifyKey,
    verify_certificate,
)
from sync_server.domain_models import Area, CertificateRevocation, ServicePoint
from sync_server.registry import active_device_keys
from sync_server.web.api_errors import InvalidRequest
from sync_server.web.app import html
from sync_server.web.context import WebContext

__all__ = [
    "CERTIFICATE_TITLES",
    "CertificateCheck",
    "check_certificate",
    "router",
    "verify_keys",
]

log = logging.getLogger(__name__)

router = APIRouter(tags=["certificates"])

SITE_TZ: Final = ZoneInfo("Asia/Shanghai")
"""Certificates are dated in China Standard Time (``nbf`` is the issue date's 00:00 CST)."""
CLOCK_SKEW_S: Final = 300
"""Grace at the day boundaries: a kiosk's clock may run a few minutes ahead of the server's."""

CERTIFICATE_TITLES: Final[Mapping[str, str]] = {
    "residence": "居住证明",
    "family_relationship": "家庭关系证明",
    "elderly_subsidy": "高龄老人补贴资格认证表",
    "difficulty": "生活困难证明",
}
"""Titles of the templates shipped with the kiosk (kiosk_ui/certificates/templates; a test keeps
them equal). A site's own templates add theirs in ``WebContext.extra["certificate_titles"]``."""

Reason = Literal[
    "valid",
    "empty",
    "not-a-credential",
    "truncated",
    "oversized",
    "malformed",
    "not-a-certificate",
    "unknown-key",
    "bad-signature",
    "not-yet-valid",
    "expired",
    "revoked",
]

# HTTP status and the Chinese sentence shown for each outcome. 410 Gone: the certificate was
# genuine and is no longer valid; 422: the text cannot be confirmed as a certificate at all.
OUTCOMES: Final[Mapping[str, tuple[int, str]]] = {
    "valid": (
        200,
        "证明真实有效：签名正确，未被撤销，在有效期内。请核对纸面上的证明名称、证明编号和出具日期"
        "与本页一致，不一致即为篡改。",
    ),
    "empty": (422, "请扫描证明上的二维码，把得到的文字（以 LQ1: 开头）粘贴到下面。"),
    "not-a-credential": (
        422,
        "这不是社区证明的核验码（核验码以 LQ1: 开头）。请扫描证明上“证明编号”旁的二维码。",
    ),
    "truncated": (422, "核验码不完整，请重新扫描证明上的二维码，完整复制后再核验。"),
    "oversized": (422, "输入的内容过长，不是证明上的核验码。"),
    "malformed": (422, "核验码已损坏或格式不对，无法识别。请重新扫描证明上的二维码。"),
    "not-a-certificate": (422, "这是智能柜的取件或开柜码，不是证明的核验码。"),
    "unknown-key": (
        422,
        "无法核实：签发这份证明的设备未在本平台登记。请向证明上的出具单位核实。",
    ),
    "bad-signature": (
        422,
        "核验未通过：签名与内容不符，这份证明可能被改动或伪造，请勿采信。",
    ),
    "not-yet-valid": (
        422,
        "无法核实：核验码上的出具日期晚于今天。请向证明上的出具单位核实。",
    ),
    "expired": (410, "这份证明已超过有效期（有效期至{valid_until}），不再有效。"),
    "revoked": (410, "这份证明已于{revoked_on}被出具单位撤销，不再有效。"),
}

_points = cast(Table, ServicePoint.__table__)
_areas = cast(Table, Area.__table__)
_revocations = cast(Table, CertificateRevocation.__table__)


class CertificateCheck(BaseModel):
    """The answer for one QR text. The certificate's details are given only when its signature
    verified (``valid``, ``expired``, ``revoked``, ``not-yet-valid``), and are all printed on
    the paper too; the QR carries no resident data."""

    valid: bool = Field(description="True only for a genuine, current, unrevoked certificate.")
    reason: Reason = Field(description="Stable code of the outcome (docs/web.md).")
    message: str = Field(description="What the outcome means for the reader, in Chinese.")
    serial: str | None = Field(default=None, description="证明编号 (the QR's `sub`).")
    template: str | None = Field(default=None, description="Template name, e.g. `residence`.")
    title: str | None = Field(default=None, description="The certificate's name, e.g. 居住证明.")
    issuer: str | None = Field(default=None, description="Device id of the issuing kiosk.")
    issuer_name: str | None = Field(default=None, description="The kiosk's registered name.")
    community: str | None = Field(default=None, description="The area the kiosk serves.")
    issued_on: dt.date | None = Field(default=None, description="出具日期 (China time).")
    valid_until: dt.date | None = Field(default=None, description="有效期至, as printed.")
    revoked_on: dt.date | None = Field(default=None, description="When it was revoked.")

    @property
    def status(self) -> int:
        """The HTTP status this outcome is answered with."""
        return OUTCOMES[self.reason][0]


def verify_keys(ctx: WebContext) -> dict[str, VerifyKey]:
    """The keys a certificate may be signed with: ``extra["verify_keys"]`` (kiosks' certificate
    keys, keys rotated out) and the server's own, which wins a key id both name."""
    extra = ctx.extra.get("verify_keys") or {}
    if not isinstance(extra, Mapping):
        raise TypeError('WebContext.extra["verify_keys"] must map key ids to VerifyKey objects')
    for kid, key in extra.items():
        if not isinstance(key, VerifyKey):
            raise TypeError(
                f'WebContext.extra["verify_keys"][{kid!r}] is a {type(key).__name__}, not a '
                "device.credential.VerifyKey; load it with device.credential.load_verify_key"
            )
    return {**extra, ctx.signing_key.kid: ctx.signing_key.verify_key}


class _Revocations:
    """``serial in revocations`` asks the database; verify_certificate asks only for a
    certificate whose signature verified, so garbage never reaches the table."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.at: float | None = None

    def __contains__(self, serial: object) -> bool:
        if not isinstance(serial, str):
            return False
        at = self.conn.execute(
            select(_revocations.c.at).where(_revocations.c.serial == serial)
        ).scalar_one_or_none()
        self.at = None if at is None else float(at)
        return at is not None


def _day(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, SITE_TZ).date()


def _chinese(day: dt.date | None) -> str:
    return "" if day is None else f"{day.year}年{day.month}月{day.day}日"


def _details(conn: Connection, ctx: WebContext, claims: CredentialClaims) -> dict[str, Any]:
    """What the paper shows next to the QR, from the signed claims and the site's tables."""
    titles = {**CERTIFICATE_TITLES, **(ctx.extra.get("certificate_titles") or {})}
    details: dict[str, Any] = {
        "serial": claims.sub,
        "template": claims.template,
        "title": titles.get(claims.template or ""),
        "issuer": claims.iss,
        "issued_on": _day(claims.nbf),
        # exp is 00:00 after the last valid day (kiosk_ui/certificates/render.py)
        "valid_until": _day(claims.exp - 1),
    }
    if claims.iss:
        point = conn.execute(
            select(_points.c.name, _areas.c.name.label("area"))
            .join(_areas, _areas.c.id == _points.c.area_id)
            .where(_points.c.device_id == claims.iss)
        ).first()
        if point is not None:
            details.update(issuer_name=point.name, community=point.area)
    return details


def _outcome(reason: str, details: Mapping[str, Any]) -> CertificateCheck:
    code: Reason = cast(Reason, reason if reason in OUTCOMES else "malformed")
    message = OUTCOMES[code][1].format(
        valid_until=_chinese(details.get("valid_until")),
        revoked_on=_chinese(details.get("revoked_on")),
    )
    return CertificateCheck(valid=code == "valid", reason=code, message=message, **details)


def check_certificate(ctx: WebContext, text: str) -> CertificateCheck:
    """Verify one QR text (as scanned or pasted) for the page and the API."""
    if not text.strip():
        return _outcome("empty", {})
    with ctx.engine.connect() as conn:
        # Kiosks' registered keys (docs/provisioning.md), then the configured ones and the
        # server's own; a key revoked as compromised is not among the registered.
        keys = {**active_device_keys(conn), **verify_keys(ctx)}
        revocations = _Revocations(conn)
        try:
            claims = verify_certificate(
                text,
                keys,
                now=ctx.clock(),
                revoked_serials=revocations,
                skew_s=CLOCK_SKEW_S,
                max_length=MAX_TEXT_LENGTH,
            )
        except CredentialError as err:
            genuine = err.claims if err.reason != "not-a-certificate" else None
            details = {} if genuine is None else _details(conn, ctx, genuine)
            if err.reason == "revoked" and revocations.at is not None:
                details["revoked_on"] = _day(revocations.at)
            # The reason and (for a genuine certificate) the serial: nothing personal, no text.
            log.info("certificate check refused (%s) %s", err.reason, details.get("serial", ""))
            return _outcome(err.reason, details)
        details = _details(conn, ctx, claims)
    log.info("certificate check: %s valid", claims.sub)
    return _outcome("valid", details)


def _ctx(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.context)


# -- page ----------------------------------------------------------------------------------------


def _page(request: Request, text: str | None) -> Response:
    check = None if text is None else check_certificate(_ctx(request), text)
    response = html(
        request,
        "verify.html",
        status=200 if check is None else check.status,
        check=check,
        text=text or "",
        issued_on=_chinese(check.issued_on) if check else "",
        valid_until=_chinese(check.valid_until) if check else "",
    )
    response.headers["Cache-Control"] = "no-store"  # a revocation must show at once
    return response


@router.get("/v", include_in_schema=False)
def verify_form(request: Request, c: Annotated[str | None, Query()] = None) -> Response:
    """The form, and with ``?c=`` the answer for that text (what the form submits)."""
    return _page(request, c)


@router.get("/v/{text:path}", include_in_schema=False)
@router.get("/V/{text:path}", include_in_schema=False)
def verify_url(request: Request, text: str) -> Response:
    """The URL form a kiosk could print (:func:`device.credential.verification_url`)."""
    return _page(request, _text_of_path(request, text))


def _text_of_path(request: Request, decoded: str) -> str:
    """The QR text from the request's raw path, percent-decoded exactly once.

    base45 has ``%`` of its own (sent as ``%25``): a server or test client that decodes the
    path twice would turn ``%2596`` into a byte. The raw path (ASGI ``raw_path``, with
    ``root_path`` in front) is what the browser sent; ``decoded`` is the fallback without it.
    """
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return decoded
    path = raw.decode("latin-1")
    root = str(request.scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    if path[:3] not in ("/v/", "/V/"):
        return decoded
    return urllib.parse.unquote(path[3:])


# -- JSON API ------------------------------------------------------------------------------------

_REFUSED = "The text is not a certificate QR, or its signature does not verify (see `reason`)."


@router.get(
    "/api/v1/certificates/verify",
    response_model=CertificateCheck,
    responses={
        410: {"model": CertificateCheck, "description": "Genuine but expired or revoked."},
        422: {
            "model": CertificateCheck | InvalidRequest,
            "description": _REFUSED + " Without `c`: the request problems.",
        },
    },
)
def api_verify(
    request: Request,
    c: Annotated[
        str,
        Query(description="The QR's text as scanned: `LQ1:` and base45 (docs/credentials.md)."),
    ],
) -> JSONResponse:
    """Check a printed certificate's verification QR: genuine, current and not revoked.

    200 with ``valid: true``; 410 for a genuine certificate that expired or was revoked; 422
    for anything that cannot be confirmed (not a certificate QR, damaged, forged, unknown key).
    """
    check = check_certificate(_ctx(request), c)
    return JSONResponse(check.model_dump(mode="json"), status_code=check.status)
