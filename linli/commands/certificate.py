"""`linli certificate`: render certificates from templates, list templates, verify their QR."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import click

from device.errors import LinliError


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise click.ClickException(f"{path}: cannot read the {what} ({err.strerror})") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise click.ClickException(f"{path}: the {what} is not valid JSON ({err})") from err


def _write_atomically(path: Path, data: bytes) -> None:
    # A half-written PDF must never look like a certificate: write aside, then rename.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@click.group()
def certificate() -> None:
    """Certificates (居住证明 and others): render to PDF, list templates, verify the QR."""


@certificate.command("templates")
@click.option(
    "--templates-dir", default="", help="Extra template directory (certificate.templates_dir)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def templates_cmd(templates_dir: str, as_json: bool) -> None:
    """List the certificate templates (built-in and from --templates-dir)."""
    from kiosk_ui.certificates import load_templates

    try:
        found = load_templates(templates_dir)
    except LinliError as err:
        raise click.ClickException(str(err)) from err
    rows = [
        {
            "name": t.name,
            "title": t.title,
            "required": [f for f, spec in t.fields.items() if spec.required],
            "path": t.path,
        }
        for t in found.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<22} {row['title']}  ({row['path']})")


@certificate.command("render")
@click.option("--template", "name", required=True, help="Template name (see `templates`).")
@click.option(
    "--identity",
    "identity_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Card JSON as printed by `linli idcard read`.",
)
@click.option(
    "--household",
    "household_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Household record JSON (docs/certificates.md).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PDF to write."
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a PNG preview of the page.",
)
@click.option("--preview-width", default=800, show_default=True, help="Preview width in pixels.")
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (PEM) signing the QR; without it an ephemeral key is used.",
)
@click.option(
    "--key-id", default="kiosk", show_default=True, help="Key id (normally the device id)."
)
@click.option("--community", default=None, help="Issuing community (certificate.community).")
@click.option("--templates-dir", default="", help="Extra template directory.")
@click.option("--font", default="", help="CJK TrueType font file (default: ask fontconfig).")
@click.option(
    "--date",
    "date_text",
    default=None,
    help="Issue date YYYY-MM-DD (default: today in China Standard Time).",
)
def render_cmd(
    *,
    name: str,
    identity_path: Path,
    household_path: Path,
    out: Path,
    preview: Path | None,
    preview_width: int,
    key_path: Path | None,
    key_id: str,
    community: str | None,
    templates_dir: str,
    font: str,
    date_text: str | None,
) -> None:
    """Fill a template for one resident and write the certificate PDF (and a PNG preview).

    Missing data (e.g. a household record without an address) is reported field by field and
    no file is written.
    """
    from device.config import CertificateSection
    from device.credential import generate_signing_key, load_signing_key
    from device.idcard.identity import Identity
    from kiosk_ui.certificates import get_template, render_certificate, render_page
    from kiosk_ui.certificates.render import CHINA_TZ

    identity_json = _read_json(identity_path, "identity")
    household = _read_json(household_path, "household record")
    try:
        identity = Identity.from_json(identity_json)
    except ValueError as err:
        raise click.ClickException(f"{identity_path}: {err}") from err
    try:
        today = dt.date.fromisoformat(date_text) if date_text else dt.datetime.now(CHINA_TZ).date()
    except ValueError as err:
        raise click.BadParameter(f"{date_text!r} is not a date like 2026-11-23") from err
    settings: dict[str, Any] = {"templates_dir": templates_dir, "font": font}
    if community is not None:
        settings["community"] = community
    try:
        config = CertificateSection(**settings)
        template = get_template(name, config.templates_dir)
        if key_path is None:
            key = generate_signing_key(key_id)
            click.echo(
                f"note: no --key given; signed with an ephemeral key (kid {key_id!r}) that no "
                "verifier knows. Use --key for a certificate that can be verified.",
                err=True,
            )
        else:
            key = load_signing_key(key_path, key_id)
        rendered = render_certificate(
            template, identity, household, config=config, key=key, today=today, now=time.time()
        )
        png = render_page(rendered.pdf, width_px=preview_width) if preview else None
    except (LinliError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    _write_atomically(out, rendered.pdf)
    if preview is not None and png is not None:
        _write_atomically(preview, png)
    click.echo(f"{out}: {template.title}, serial {rendered.serial}")


@certificate.command("verify")
@click.argument("qrtext")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM) of the issuer.",
)
@click.option("--key-id", default=None, help="Key id of that key (default: the one in the QR).")
@click.option(
    "--at", "at", type=float, default=None, help="Check at this Unix time (default: now)."
)
def verify_cmd(qrtext: str, public_key: Path, key_id: str | None, at: float | None) -> None:
    """Check a certificate's QR text and print its claims as JSON; exit 1 when it is refused."""
    from device.credential import CredentialError, key_id_of, load_verify_key, verify_certificate

    try:
        kid = key_id if key_id is not None else key_id_of(qrtext)
        keys = {kid: load_verify_key(public_key, kid)}
        claims = verify_certificate(qrtext, keys, now=time.time() if at is None else at)
    except CredentialError as err:
        raise click.ClickException(f"refused ({err.reason}): {err}") from err
    except LinliError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(claims.to_json(), ensure_ascii=False, indent=2))


@certificate.command("keygen")
@click.option(
    "--private",
    "private_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (PEM, mode 0600).",
)
@click.option(
    "--public",
    "public_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the public key (PEM).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing private key.")
def keygen_cmd(private_path: Path, public_path: Path, force: bool) -> None:
    """Create an Ed25519 key pair for signing certificate QR codes (development and tests)."""
    from device.credential import generate_signing_key, save_signing_key, save_verify_key

    if private_path.exists() and not force:
        raise click.ClickException(f"{private_path} exists; use --force to replace the key")
    key = generate_signing_key("kiosk")
    save_signing_key(key, private_path)
    save_verify_key(key.verify_key, public_path)
    click.echo(f"wrote {private_path} (0600) and {public_path}")
