"""`linli idcard`: ID-card (二代身份证) reader: read cards and decode SAM frames."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import click

from device.errors import LinliError, ProtocolError
from device.idcard.codec import (
    Command,
    parse_frame,
    parse_read_data,
    parse_reply_body,
    read_layout,
)
from device.idcard.errors import SW3_FIND_OK, SW3_OK, sw3_meaning
from device.idcard.reader import SamReader


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


@click.group()
def idcard() -> None:
    """ID-card (二代身份证) reader: read cards and decode SAM frames."""


@idcard.command("read")
@click.option("--port", required=True, help="Serial port of the reader, e.g. /dev/ttyUSB0.")
@click.option("--baudrate", default=115200, show_default=True, help="Line rate of the reader.")
@click.option(
    "--timeout", "timeout_s", default=2.0, show_default=True, help="Seconds to wait for a reply."
)
@click.option(
    "--wait",
    "wait_s",
    default=0.0,
    show_default=True,
    help="Seconds to keep polling for a card (0: look once).",
)
@click.option("--fingerprint", is_flag=True, help="Also read the fingerprint data.")
def read(port: str, baudrate: int, timeout_s: float, wait_s: float, fingerprint: bool) -> None:
    """Read the card on the reader and print it as JSON (the photo as its byte length).

    Exits with status 1 and a message when no card is found or the reader fails.
    """
    try:
        with SamReader(
            port=port, baudrate=baudrate, timeout_s=timeout_s, read_fingerprint=fingerprint
        ) as reader:
            deadline = time.monotonic() + wait_s
            identity = reader.read_card()
            while identity is None and time.monotonic() < deadline:
                time.sleep(reader.settings.poll_interval_ms / 1000)
                identity = reader.read_card()
    except LinliError as err:
        raise click.ClickException(str(err)) from err
    if identity is None:
        waited = f" within {wait_s:g} s" if wait_s else ""
        raise click.ClickException(
            f"no card on the reader at {port}{waited}; place the card flat on the reader and "
            "retry (use --wait SECONDS to keep looking)"
        )
    payload = identity.to_json()
    if fingerprint:
        payload["fingerprint_bytes"] = len(identity.fingerprint or b"")
    _emit(payload)


def _hex_bytes(text: str) -> bytes:
    cleaned = re.sub(r"[\s:,-]", "", text)
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError as err:
        raise click.ClickException(
            f"not a hex string ({err}); give bytes like 'AA AA AA 96 69 00 04 00 00 90 94'"
        ) from err


@idcard.command("decode")
@click.argument("hex_frame", metavar="HEX", nargs=-1, required=True)
def decode(hex_frame: tuple[str, ...]) -> None:
    """Decode one SAM frame given in hex (spaces allowed) and print it as JSON.

    A read reply prints the identity; another reply prints its SW3 status and meaning; a known
    request prints its command. A malformed frame exits with status 1 and says what is wrong.
    """
    frame = _hex_bytes(" ".join(hex_frame))
    try:
        body = parse_frame(frame)
        command = Command.from_body(body)
        if command is not None and len(body) == 2:
            _emit({"request": command.label, "cmd": f"{body[0]:02X}", "para": f"{body[1]:02X}"})
            return
        reply = parse_reply_body(body)
        if reply.sw3 == SW3_OK and read_layout(reply.data) is not None:
            _emit(parse_read_data(reply.data).to_json())
            return
    except ProtocolError as err:
        raise click.ClickException(f"malformed frame: {err}") from err
    _emit(
        {
            "sw1": f"{reply.sw1:02X}",
            "sw2": f"{reply.sw2:02X}",
            "sw3": f"{reply.sw3:02X}",
            "status": sw3_meaning(reply.sw3),
            "ok": reply.sw3 in (SW3_OK, SW3_FIND_OK),
            "data": reply.data.hex(" ").upper(),
        }
    )
