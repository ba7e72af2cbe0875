"""The public certificate check (/v page and /api/v1/certificates/verify) on SQLite and PostgreSQL.

The certificate comes from the kiosk's own certificate desk (kiosk_ui/issuing.py, which renders and
signs it with the kiosk's key); its QR is decoded from the rendered PDF page, as a phone would read
it from the paper.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import base45
import cbor2
import httpx
import pytest
import segno
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.clock import FakeClock
from device.config import A4PrinterSection, CertificateSection, ReceiptPrinterSection
from device.credential import (
    PREFIX,
    CredentialClaims,
    MalformedCredentialError,
    NotACertificateError,
    NotACredentialError,
    RevokedCredentialError,
    SigningKey,
    generate_signing_key,
    issue,
    verification_url,
    verify_certificate,
)
from device.escpos.printer import ReceiptPrinter
from hardware_sim.idcards import sample_card
from kiosk_ui.certificates import RenderedCertificate, load_templates
from kiosk_ui.issuing import CertificateDesk, MemoryHouseholds
from sync_server.domain_models import CertificateRevocation
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from sync_server.web.verify import CERTIFICATE_TITLES, verify_keys
from tests.cases.conftest import NOW
from tests.certificates.conftest import household_record, qr_codes
from tests.web.conftest import RecordingSender
from tests.web.http_server import served

API = "/api/v1/certificates/verify"
COMMUNITY = "幸福社区居民委员会"
RESIDENT = sample_card(3)
DAY = 86_400
# The certificate is issued on NOW's day (2027-01-15, China time) and is valid for 90 days.
ISSUED_ON = dt.date(2027, 1, 15)
VALID_UNTIL = ISSUED_ON + dt.timedelta(days=90)


@pytest.fixture(scope="module")
def kiosk_key() -> SigningKey:
    """The key of kiosk-1 (a kiosk of the test site); certificates are signed with it."""
    return generate_signing_key("kiosk-1")


@pytest.fixture(scope="module")
def certificate(kiosk_key: SigningKey, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A residence certificate rendered by the kiosk's desk at NOW (nothing printed)."""
    spool: Path = tmp_path_factory.mktemp("spool")
    device_key = DeviceKey.generate()
    desk = CertificateDesk(
        templates=load_templates(),
        households=MemoryHouseholds({RESIDENT.id_number: household_record()}),
        config=CertificateSection(community=COMMUNITY),
        signing_key=kiosk_key,
        a4=A4Printer(A4PrinterSection(backend="none"), spool / "a4", key=device_key),
        receipts=ReceiptPrinter(ReceiptPrinterSection(backend="none"), spool / "r", key=device_key),
        clock=FakeClock(wall=NOW),
    )
    return desk.render(RESIDENT, "residence")


@pytest.fixture(scope="module")
def qr_text(certificate: RenderedCertificate) -> str:
    """What a phone reads from the printed page."""
    [text] = qr_codes(certificate.pdf)
    assert text == certificate.qr_text
    return text


class Clock:
    """The server's clock, moved by the tests."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(
    site: Engine, key: SigningKey, kiosk_key: SigningKey, clock: Clock
) -> Iterator[TestClient]:
    """The web app of a server that knows kiosk-1's certificate key and an old server key."""
    old = generate_signing_key("srv-0")
    context = WebContext(
        engine=site,
        signing_key=key,
        send_command=RecordingSender(),
        clock=clock,
        extra={"verify_keys": {"kiosk-1": kiosk_key.verify_key, "srv-0": old.verify_key}},
    )
    context.extra["old_key"] = old  # for the rotated-key test
    with TestClient(create_app(context), base_url="http://linli.test") as c:
        yield c


def check(client: TestClient, text: str, status: int, reason: str) -> dict[str, Any]:
    """The API's answer for ``text``, asserting its status and reason."""
    r = client.get(API, params={"c": text})
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["reason"] == reason
    assert body["valid"] is (reason == "valid")
    assert r.headers["cache-control"] == "no-store"
    return body


def page(client: TestClient, text: str, status: int) -> str:
    r = client.get("/v", params={"c": text})
    assert r.status_code == status
    assert r.headers["cache-control"] == "no-store"
    return str(r.text)


def no_personal_data(text: str) -> None:
    household = household_record()
    for secret in (RESIDENT.id_number, RESIDENT.name, RESIDENT.address, household["address"]):
        assert secret not in text
    for member in household["members"]:
        assert member["name"] not in text


# -- genuine ----------------------------------------------------------------------------------


def test_a_certificate_printed_by_the_kiosk_verifies(
    verifier: TestClient, qr_text: str, certificate: RenderedCertificate
) -> None:
    body = check(verifier, qr_text, 200, "valid")
    assert body["serial"] == certificate.serial
    assert body["template"] == "residence" and body["title"] == "居住证明"
    assert body["issuer"] == "kiosk-1"
    assert body["issuer_name"] == "社区一体机" and body["community"] == "幸福社区"
    assert body["issued_on"] == ISSUED_ON.isoformat()
    assert body["valid_until"] == VALID_UNTIL.isoformat()
    assert "真实有效" in body["message"]
    no_personal_data(str(body))

    html = page(verifier, qr_text, 200)
    assert "证明有效" in html and 'data-reason="valid"' in html
    assert certificate.serial in html and "居住证明" in html
    assert "2027年1月15日" in html and "2027年4月15日" in html  # 出具日期, 有效期至 as printed
    assert "社区一体机" in html and "幸福社区" in html
    no_personal_data(html.replace(qr_text, ""))  # the pasted text is echoed in the form


def test_the_form_page_explains_what_to_paste(verifier: TestClient) -> None:
    r = verifier.get("/v")
    assert r.status_code == 200
    assert "证明核验" in r.text and 'name="c"' in r.text and "LQ1:" in r.text
    assert 'id="result"' not in r.text


def test_the_url_form_a_kiosk_could_print_opens_the_same_answer(
    verifier: TestClient, qr_text: str, certificate: RenderedCertificate
) -> None:
    url = verification_url("HTTPS://LINLI.TEST", qr_text)
    # The whole URL stays in the QR code's alphanumeric mode: no bigger than it must be.
    assert segno.make(url, error="m").mode == "alphanumeric"
    path = urllib.parse.urlsplit(url).path
    assert "/" not in path.removeprefix("/V/")  # one path segment: no dot segments possible
    # Every base45 character that needs it, escaped (a fixed text: the certificate's is random).
    tricky = verification_url("HTTPS://X", "LQ1:A%25B /../C+D%0A")
    assert tricky == "HTTPS://X/V/LQ1:A%2525B%20%2F..%2FC+D%250A"
    # Over real HTTP: TestClient decodes a path twice, and the random text may hold "%25".
    with served(verifier.app) as base, httpx.Client(base_url=base) as http:
        r = http.get(path)
        assert r.status_code == 200 and certificate.serial in r.text and "证明有效" in r.text
        # The lower-case path answers too (a link typed or written by hand).
        assert http.get("/v/" + path.removeprefix("/V/")).status_code == 200
        r = http.get(tricky.removeprefix("HTTPS://X"))
        assert r.status_code == 422 and "核验未通过" in r.text
        assert 'value="LQ1:A%25B /../C+D%0A"' in r.text  # decoded exactly once
        assert http.get("/v/").status_code == 422  # nothing after the prefix: "empty"


def test_a_certificate_signed_with_a_rotated_out_key_still_verifies(
    verifier: TestClient,
) -> None:
    context: WebContext = verifier.app.state.context  # type: ignore[attr-defined]
    old: SigningKey = context.extra["old_key"]
    text = issue(certificate_claims("srv-0-20270110-AAAAAAAA", iss="srv-0"), old)
    body = check(verifier, text, 200, "valid")
    assert body["issuer"] == "srv-0" and body["issuer_name"] is None


def test_the_servers_own_key_verifies_and_wins_over_an_extra_key_of_the_same_id(
    site: Engine, key: SigningKey
) -> None:
    impostor = generate_signing_key(key.kid)
    context = WebContext(
        engine=site,
        signing_key=key,
        send_command=RecordingSender(),
        extra={"verify_keys": {key.kid: impostor.verify_key}},
    )
    assert verify_keys(context)[key.kid] == key.verify_key


def test_verify_keys_of_the_wrong_type_are_a_clear_error(site: Engine, key: SigningKey) -> None:
    context = WebContext(
        engine=site,
        signing_key=key,
        send_command=RecordingSender(),
        extra={"verify_keys": {"kiosk-1": "/etc/linli/keys/kiosk-1.pub"}},
    )
    with pytest.raises(TypeError, match=r"\['kiosk-1'\] is a str.*load_verify_key"):
        verify_keys(context)


def test_the_built_in_titles_are_the_kiosks_templates() -> None:
    assert dict(CERTIFICATE_TITLES) == {t.name: t.title for t in load_templates().values()}


# -- refused ----------------------------------------------------------------------------------


def certificate_claims(serial: str, **overrides: Any) -> CredentialClaims:
    """Claims shaped like the kiosk's (kiosk_ui/certificates/render.py), issued on NOW's day."""
    start = int(dt.datetime(2027, 1, 15, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())
    values: dict[str, Any] = {
        "kind": "certificate",
        "sub": serial,
        "nbf": start,
        "exp": start + 91 * DAY,  # 00:00 after the 90th day, the last printed
        "iss": "kiosk-1",
        "digest": bytes(16),
        "template": "residence",
    }
    values.update(overrides)
    return CredentialClaims(**values)


def altered(text: str, **changes: Any) -> str:
    """``text`` with claims changed and the original signature kept (a forger's edit)."""
    sign1 = cbor2.loads(base45.b45decode(text[len(PREFIX) :]))
    claims = cbor2.loads(sign1.value[2])
    labels = {"sub": 2, "exp": 4}
    for name, value in changes.items():
        claims[labels[name]] = value
    sign1.value[2] = cbor2.dumps(claims, canonical=True)
    encoded: bytes = base45.b45encode(cbor2.dumps(sign1))
    return PREFIX + encoded.decode("ascii")


def test_an_altered_certificate_is_refused_as_forged(verifier: TestClient, qr_text: str) -> None:
    forged = altered(qr_text, exp=int(NOW) + 3650 * DAY)
    body = check(verifier, forged, 422, "bad-signature")
    assert "伪造" in body["message"] and body["serial"] is None
    html = page(verifier, forged, 422)
    assert "核验未通过" in html and "伪造" in html and 'id="details"' not in html


@pytest.mark.parametrize("position", [10, 100, -20])
def test_any_changed_character_is_refused(
    verifier: TestClient, qr_text: str, position: int
) -> None:
    chars = list(qr_text)
    chars[position] = "0" if chars[position] != "0" else "1"
    body = verifier.get(API, params={"c": "".join(chars)}).json()
    assert body["valid"] is False
    assert body["reason"] in ("bad-signature", "malformed", "truncated", "unknown-key")


def test_a_certificate_signed_by_another_key_is_refused(verifier: TestClient) -> None:
    same_id = issue(
        certificate_claims("kiosk-1-20270115-ZZZZZZZZ"), generate_signing_key("kiosk-1")
    )
    check(verifier, same_id, 422, "bad-signature")
    unknown = issue(
        certificate_claims("kiosk-9-20270115-ZZZZZZZZ"), generate_signing_key("kiosk-9")
    )
    body = check(verifier, unknown, 422, "unknown-key")
    assert "未在本平台登记" in body["message"]
    assert "未在本平台登记" in page(verifier, unknown, 422)


def test_an_expired_certificate_says_until_when_it_was_valid(
    verifier: TestClient, qr_text: str, clock: Clock
) -> None:
    clock.now = NOW + 91 * DAY
    body = check(verifier, qr_text, 410, "expired")
    assert "有效期至2027年4月15日" in body["message"]
    assert body["serial"] and body["valid_until"] == VALID_UNTIL.isoformat()
    html = page(verifier, qr_text, 410)
    assert "证明已失效" in html and "已超过有效期" in html


def test_a_certificate_dated_in_the_future_is_refused(verifier: TestClient, clock: Clock) -> None:
    clock.now = NOW - 2 * DAY
    context: WebContext = verifier.app.state.context  # type: ignore[attr-defined]
    text = issue(certificate_claims("srv-1-20270115-FFFFFFFF"), context.signing_key)
    assert "晚于今天" in check(verifier, text, 422, "not-yet-valid")["message"]


def test_a_revoked_serial_no_longer_verifies(
    verifier: TestClient, site: Engine, qr_text: str, certificate: RenderedCertificate, clock: Clock
) -> None:
    with site.begin() as conn:
        conn.execute(
            insert(CertificateRevocation),
            [{"serial": "kiosk-1-20270115-OTHER000", "at": NOW, "reason": "另一份"}],
        )
    check(verifier, qr_text, 200, "valid")  # another serial's revocation changes nothing
    with site.begin() as conn:
        conn.execute(
            insert(CertificateRevocation),
            [{"serial": certificate.serial, "at": NOW + DAY, "reason": "住址信息有误，已重新出具"}],
        )
    body = check(verifier, qr_text, 410, "revoked")
    assert body["revoked_on"] == "2027-01-16" and "2027年1月16日" in body["message"]
    assert body["serial"] == certificate.serial
    html = page(verifier, qr_text, 410)
    assert "被出具单位撤销" in html and certificate.serial in html
    assert "住址信息有误" not in html  # the office's reason is internal
    clock.now = NOW + 365 * DAY  # revoked and expired: the revocation is what the reader learns
    check(verifier, qr_text, 410, "revoked")


def test_a_locker_code_is_not_a_certificate(verifier: TestClient, key: SigningKey) -> None:
    collect = issue(
        CredentialClaims(
            kind="collect", sub="C23456789A", aud="locker-1", nbf=int(NOW), exp=int(NOW) + 600
        ),
        key,
    )
    body = check(verifier, collect, 422, "not-a-certificate")
    assert "取件" in body["message"] and body["serial"] is None
    assert "C23456789A" not in page(verifier, collect, 422)


@pytest.mark.parametrize(
    ("text", "reason", "words"),
    [
        ("https://example.com/x", "not-a-credential", "不是社区证明的核验码"),
        ("hello", "not-a-credential", "LQ1:"),
        ("LQ1:", "truncated", "不完整"),
        ("LQ1:NCF", "truncated", "不完整"),
        ("LQ1:" + base45.b45encode(cbor2.dumps("hello")).decode(), "malformed", "无法识别"),
        ("LQ1:!!!!", "malformed", "无法识别"),
        ("   ", "empty", "请扫描"),
        ("LQ1:" + "A" * 5000, "oversized", "过长"),
        ("LQ1:\x00\u4e2d", "malformed", "无法识别"),
    ],
)
def test_garbage_gets_a_clear_chinese_message(
    verifier: TestClient, text: str, reason: str, words: str
) -> None:
    body = check(verifier, text, 422, reason)
    assert words in body["message"]
    assert words in page(verifier, text, 422)


def test_the_api_without_a_text_lists_the_problem(verifier: TestClient) -> None:
    r = verifier.get(API)
    assert r.status_code == 422
    assert r.json()["detail"] == ["c: Field required"]


def test_the_check_is_in_the_openapi_description(verifier: TestClient) -> None:
    schema = verifier.get("/api/v1/openapi.json").json()
    operation = schema["paths"][API]["get"]
    assert set(operation["responses"]) == {"200", "410", "422"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/CertificateCheck"}
    assert "/v" not in schema["paths"]  # the page is not part of the API


# -- the shared check itself (device/credential.py) --------------------------------------------


def test_verify_certificate_checks_kind_and_revocation_before_the_dates(
    kiosk_key: SigningKey, qr_text: str, certificate: RenderedCertificate
) -> None:
    keys = {"kiosk-1": kiosk_key.verify_key}
    claims = verify_certificate(qr_text, keys, now=NOW)
    assert claims.sub == certificate.serial and claims.template == "residence"
    with pytest.raises(RevokedCredentialError) as revoked:
        verify_certificate(qr_text, keys, now=NOW + 999 * DAY, revoked_serials={claims.sub})
    assert revoked.value.claims == claims
    deposit = issue(
        CredentialClaims(kind="deposit", sub="C23456789A", nbf=0, exp=1), kiosk_key
    )  # expired long ago, and the wrong kind: the kind is what is reported
    with pytest.raises(NotACertificateError):
        verify_certificate(deposit, keys, now=NOW)


def test_a_certificate_without_a_template_is_malformed(kiosk_key: SigningKey) -> None:
    text = issue(certificate_claims("kiosk-1-20270115-NOTEMPL0", template=None), kiosk_key)
    with pytest.raises(MalformedCredentialError, match="no template"):
        verify_certificate(text, {"kiosk-1": kiosk_key.verify_key}, now=NOW)


def test_only_credential_texts_get_a_verification_url() -> None:
    with pytest.raises(NotACredentialError):
        verification_url("https://linli.test", "https://evil.test/")
    assert verification_url("https://linli.test/", "LQ1:AB") == "https://linli.test/V/LQ1:AB"
