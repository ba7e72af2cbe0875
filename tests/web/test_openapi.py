"""Schemathesis over the JSON API's own description (``/api/v1/openapi.json``).

Every operation is called with generated data, valid (positive) and invalid (negative), and each
answer must match the description: no server error, a documented status code, content type and
headers, a body of the documented schema, invalid input refused with a 4xx, a missing required
header refused, an undocumented method answered 405. Real ids (a case with its token, a locker,
a certificate QR) are mixed into the generated values, so calls get past 404 and 422 into the
operations' real work.

The app runs behind a real uvicorn (tests/web/http_server.py) rather than through the in-process
ASGI client: that client percent-decodes paths twice and passes header values no HTTP parser
would, so its findings would be about the client, not the API.

The description the cases are generated from is built when this module is imported (pytest
parametrizes one test per operation at collection) from an app with no database behind it;
``test_the_served_description_is_the_one_tested`` checks it equals what the server serves.
schemathesis' fixture-based lazy loading would avoid that, but it does not work with pytest 9
(it sets the private ``Node._nodeid``). Case ids and tokens are random per database, so the
generated values carry fixed placeholders that each test replaces with the real ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy import Engine, create_engine, insert

from device.credential import CredentialClaims, SigningKey, generate_signing_key, issue
from sync_server.domain_models import CertificateRevocation
from sync_server.enrollment import EnrollmentCA
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from tests.cases.conftest import NOW
from tests.cases.test_cases import new_case, send
from tests.web.conftest import RecordingSender
from tests.web.http_server import served

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
]
MAX_EXAMPLES = 30
"""Per operation and generation phase: the whole file stays well under a minute."""

# Placeholders schemathesis draws (they match the parameters' patterns); each test swaps in the
# real values of its database.
DEPOSITED, READY = "C22222222D", "C33333333R"
DEPOSITED_TOKEN, READY_TOKEN = "deposited-token-0000", "ready-token-000000000"
CERTIFICATE, REVOKED, LOCKER_CODE = "LQ1:CERTIFICATE", "LQ1:REVOKED", "LQ1:LOCKERCODE"


def _description() -> dict[str, Any]:
    """The API description of the app (no database needed to describe it)."""
    app = create_app(
        WebContext(
            engine=create_engine("sqlite://"),
            signing_key=generate_signing_key("describe"),
            send_command=RecordingSender(),
        )
    )
    description: dict[str, Any] = app.openapi()
    return description


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,  # the same cases every run: a failure is reproducible
            "database": "none",
        },
        "dictionaries": {
            "cases": {"values": [READY, DEPOSITED]},
            "tokens": {"values": [READY_TOKEN, DEPOSITED_TOKEN]},
            "lockers": {"values": ["locker-1", "locker-2", "kiosk-1"]},
            "services": {"values": ["residence", "retired"]},
            "certificates": {"values": [CERTIFICATE, REVOKED, LOCKER_CODE]},
        },
        "parameters": {
            "path.case_id": {"dictionary": "cases", "probability": 0.6},
            "header.X-Case-Token": {"dictionary": "tokens", "probability": 0.6},
            "path.device_id": {"dictionary": "lockers", "probability": 0.6},
            "body.service": {"dictionary": "services", "probability": 0.6},
            "query.c": {"dictionary": "certificates", "probability": 0.6},
        },
    }
)
DESCRIPTION = _description()
schema = schemathesis.openapi.from_dict(DESCRIPTION, config=CONFIG)


@dataclass(frozen=True)
class Api:
    """A served app on a site with real cases, and the placeholder -> real value map."""

    base_url: str
    real: dict[str, str]

    def substitute(self, case: schemathesis.Case[Any]) -> None:
        """Replace the placeholders schemathesis drew with this database's values.

        A placeholder token becomes the token of the case the call names, when that is a known
        case: drawn independently, case and token would rarely match. Random tokens still
        exercise the 404 of a wrong one.
        """
        path, query, headers = case.path_parameters, case.query, case.headers
        if path is not None and path.get("case_id") in self.real:
            path["case_id"] = self.real[path["case_id"]]
        if query is not None and query.get("c") in self.real:
            query["c"] = self.real[query["c"]]
        token = headers.get("X-Case-Token") if headers is not None else None
        if isinstance(token, str) and token in self.real:
            named = path.get("case_id") if path is not None else None
            headers["X-Case-Token"] = self.real.get(f"token:{named}", self.real[token])


def real_values(site: Engine, key: SigningKey, kiosk: SigningKey) -> dict[str, str]:
    """A deposited case, one whose result is in the locker, a certificate, a revoked one and a
    locker code; the tokens also under ``token:{case}``."""
    deposited, deposited_token = new_case(site)
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 3, "case": deposited, "content": "documents"}),
    )
    ready, ready_token = new_case(site)
    for event, compartment, content in [
        ("compartment.deposited", 4, "documents"),
        ("compartment.emptied", 4, "documents"),
        ("compartment.deposited", 5, "result"),
    ]:
        send(site, "locker-1", (event, {"compartment": compartment, "case": ready,
                                        "content": content}))  # fmt: skip
    start = int(NOW) - 3600
    certificate = issue(
        CredentialClaims(kind="certificate", sub="kiosk-1-20270115-ABCDEFGH", nbf=start,
                         exp=start + 90 * 86400, iss="kiosk-1", digest=bytes(16),
                         template="residence"),
        kiosk,
    )  # fmt: skip
    collect = issue(
        CredentialClaims(kind="collect", sub=ready, aud="locker-1", nbf=start, exp=start + 7200),
        key,
    )
    revoked_serial = "kiosk-1-20270115-REV0KED0"
    revoked = issue(
        CredentialClaims(kind="certificate", sub=revoked_serial, nbf=start,
                         exp=start + 90 * 86400, iss="kiosk-1", template="residence"),
        kiosk,
    )  # fmt: skip
    with site.begin() as conn:
        conn.execute(
            insert(CertificateRevocation), [{"serial": revoked_serial, "at": NOW, "reason": "test"}]
        )
    return {
        DEPOSITED: deposited,
        READY: ready,
        DEPOSITED_TOKEN: deposited_token,
        READY_TOKEN: ready_token,
        f"token:{deposited}": deposited_token,
        f"token:{ready}": ready_token,
        CERTIFICATE: certificate,
        REVOKED: revoked,
        LOCKER_CODE: collect,
    }


@pytest.fixture
def api(site: Engine, key: SigningKey) -> Iterator[Api]:
    kiosk = generate_signing_key("kiosk-1")
    real = real_values(site, key, kiosk)
    app = create_app(
        WebContext(
            engine=site,
            signing_key=key,
            send_command=RecordingSender(),
            clock=lambda: NOW,
            extra={
                "verify_keys": {"kiosk-1": kiosk.verify_key},
                "enrollment_ca": enrollment_ca(),  # POST /api/enroll is fuzzed for real
            },
        )
    )
    with served(app) as base:
        yield Api(base, real)


def enrollment_ca() -> EnrollmentCA:
    """A throwaway enrollment CA (EC P-256, self-signed) for the fuzzed enrollment endpoint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test enrollment CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return EnrollmentCA(cert, key)


@schema.parametrize()
def test_the_api_matches_its_description(case: schemathesis.Case[Any], api: Api) -> None:
    api.substitute(case)
    case.call_and_validate(base_url=api.base_url, checks=CHECKS)


def test_the_served_description_is_the_one_tested(api: Api) -> None:
    served_description = httpx.get(f"{api.base_url}/api/v1/openapi.json").json()
    assert served_description == DESCRIPTION
    operations = {(m.upper(), p) for p, ops in DESCRIPTION["paths"].items() for m in ops}
    # New operations are tested above without listing them here; these must not go missing.
    assert operations >= {
        ("GET", "/api/v1/lockers/{device_id}"),
        ("POST", "/api/v1/lockers/{device_id}/cases"),
        ("GET", "/api/v1/cases/{case_id}"),
        ("POST", "/api/v1/cases/{case_id}/confirm"),
        ("POST", "/api/v1/cases/{case_id}/credential"),
        ("GET", "/api/v1/certificates/verify"),
    }


def test_an_undeclared_method_is_405_with_allow(api: Api) -> None:
    r = httpx.request("DELETE", f"{api.base_url}/api/v1/certificates/verify", params={"c": "x"})
    assert r.status_code == 405
    assert "GET" in r.headers.get("allow", "")
