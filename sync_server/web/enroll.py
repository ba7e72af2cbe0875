"""``POST /api/enroll``: a device's first boot turns a one-time token and a CSR into its
certificate (docs/provisioning.md).

The device generated its Ed25519 key itself; it sends a CSR signed with it and the token from its
bundle. The server spends the token (once, before its expiry, only for that device), certifies
the key with the enrollment CA under the identity's key id, registers the public key (so the
certificates a kiosk prints verify), and answers with the certificate, the CA chain and the
device's broker password sealed under the token — the server never holds that password in clear.
A device whose answer was lost may ask again with the same key and token and gets the same
certificate; anyone else presenting a spent token is refused.

The enrollment CA comes from ``WebContext.extra["enrollment_ca"]`` (the server config's
``[enrollment]``); without it the endpoint answers 503.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from sync_server.enrollment import CsrError, EnrollmentCA, check_csr
from sync_server.registry import (
    RegistryError,
    certify_identity,
    identity,
    record_refusal,
    redeem_token,
)
from sync_server.web.api_errors import problem_responses
from sync_server.web.context import WebContext

__all__ = ["EnrollAnswer", "EnrollRequest", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["enrollment"])

DEVICE_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"

_MESSAGES: Final = {
    "token-unknown": "注册令牌无效。",
    "token-used": "注册令牌已被使用。",
    "token-expired": "注册令牌已过期，请联系运维人员重新签发。",
    "not-pending": "该设备当前无待注册的身份。",
    "bad-csr": "证书签名请求无效：{detail}",
}


class EnrollRequest(BaseModel):
    """What a device sends on first boot."""

    device: Annotated[str, Field(pattern=DEVICE_PATTERN, description="The device id.")]
    token: Annotated[
        str, Field(min_length=16, max_length=128, description="The one-time enrollment token.")
    ]
    csr: Annotated[
        str,
        Field(
            min_length=64,
            max_length=4096,
            description="PEM PKCS#10 request for the device's Ed25519 key; CN = device id.",
        ),
    ]


class EnrollAnswer(BaseModel):
    """The device's certificate and what it needs to connect."""

    certificate: str = Field(description="The device certificate, PEM.")
    chain: str = Field(description="Enrollment CA and site CA certificates, PEM, nearest first.")
    key_id: str = Field(description="The key id (kid) the device signs with.")
    wrapped_password: str = Field(
        description="The broker password sealed under the token (AES-GCM, base64)."
    )


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


@router.post(
    "/enroll",
    response_model=EnrollAnswer,
    responses=problem_responses(400, 403, 409, 410, 422, 503),
)
def enroll(request: Request, body: EnrollRequest) -> EnrollAnswer:
    """Certify a device's key against its one-time enrollment token."""
    ctx = _context(request)
    ca = ctx.extra.get("enrollment_ca")
    if not isinstance(ca, EnrollmentCA):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "本服务器未开启设备注册。")
    now = ctx.clock()
    try:
        public = check_csr(body.csr, body.device)
    except CsrError as err:
        record_refusal(ctx.engine, body.device, "bad-csr", now)
        raise HTTPException(400, _MESSAGES["bad-csr"].format(detail=err)) from err
    try:
        with ctx.engine.begin() as conn:
            wrapped = redeem_token(conn, body.device, body.token, public, now)
            ident = identity(conn, body.device)
            if ident is None:  # the token row names a device without identity: not possible
                raise RegistryError("no identity", "not-pending", 409)
            if ident.state == "enrolled" and ident.cert_pem:  # a retry after a lost answer
                cert_pem = ident.cert_pem
            else:
                cert = ca.certify(
                    public,
                    device_id=body.device,
                    kind=ident.kind,
                    kid=ident.key_id,
                    site=ctx.site_name,
                    now=now,
                )
                certify_identity(conn, body.device, cert, now)
                cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    except RegistryError as err:
        record_refusal(ctx.engine, body.device, err.reason, now)
        raise HTTPException(err.status, _MESSAGES.get(err.reason, str(err))) from err
    log.info("device %s enrolled (key %s)", body.device, ident.key_id)
    return EnrollAnswer(
        certificate=cert_pem, chain=ca.chain_pem(), key_id=ident.key_id, wrapped_password=wrapped
    )
