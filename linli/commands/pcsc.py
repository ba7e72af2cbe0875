"""`linli card`: PC/SC card reader: list readers, wait for a card, read its number."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from pydantic import ValidationError

from device.clock import SYSTEM_CLOCK
from device.config import PcscSection, load_config
from device.errors import ConfigError, DeviceUnavailableError, LinliError
from device.pcsc.errors import NoCardError

EXIT_ERROR = 1  # card or reader failure while reading (status word, bad record, card pulled)
EXIT_NO_READER = 3  # pcscd not running, or no reader matches
EXIT_NO_CARD = 4  # no card within --wait

_EXIT_HELP = (
    "Exit status: 0 read, 1 card or reader error, 2 usage error, 3 no reader (or pcscd not "
    "running), 4 no card within --wait."
)


class _NoReaderExit(click.ClickException):
    exit_code = EXIT_NO_READER


class _NoCardExit(click.ClickException):
    exit_code = EXIT_NO_CARD


def _fail(err: LinliError) -> click.ClickException:
    """The click error (message and exit status) for a Linli error."""
    if isinstance(err, DeviceUnavailableError):
        return _NoReaderExit(str(err))
    if isinstance(err, NoCardError):
        return _NoCardExit(str(err))
    return click.ClickException(str(err))


def _section(config: Path | None, reader: str | None, aid: str | None) -> PcscSection:
    try:
        base = load_config(config).pcsc if config is not None else PcscSection()
        overrides = {k: v for k, v in (("reader", reader), ("aid", aid)) if v is not None}
        return PcscSection.model_validate({**base.model_dump(), **overrides})
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--config") from err
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise click.BadParameter(problems) from err


_config_option = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Device configuration (TOML); its [pcsc] section gives the defaults.",
)


@click.group()
def card() -> None:
    """PC/SC card reader: list readers, wait for a card, read its number."""


@card.command("readers")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
def readers(as_json: bool) -> None:
    """List the PC/SC readers pcscd knows, and whether a card is in each.

    Exit status 3 when pcscd is not running.
    """
    from device.pcsc.reader import PcscReader  # lazy: pyscard loads only when used

    try:
        with PcscReader() as reader:
            found = [{"name": n, "card": reader.card_present(n)} for n in reader.list_readers()]
    except LinliError as err:
        raise _fail(err) from err
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    if not found:
        click.echo("no PC/SC readers (is the reader plugged in?)")
    for entry in found:
        click.echo(f"{entry['name']}\t{'card present' if entry['card'] else 'empty'}")


@card.command("read", epilog=_EXIT_HELP)
@click.option(
    "--reader", "reader_name", help="Substring of the reader name (default: [pcsc] reader)."
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=None,
    help="Seconds to wait for a card (default: [pcsc] timeout_s, 5).",
)
@click.option("--aid", help="Application AID in hex (default: F04C494E4C4901).")
@click.option("--mask", is_flag=True, help="Print the card number masked (last 4 digits only).")
@_config_option
def read(
    reader_name: str | None, wait: float | None, aid: str | None, mask: bool, config: Path | None
) -> None:
    """Wait for a card, read its record and print it as JSON.

    The JSON has the reader, the card number, kind (community / social_security), issuer code,
    expiry date and whether the card has expired.
    """
    from device.pcsc.reader import PcscReader  # lazy: pyscard loads only when used

    section = _section(config, reader_name, aid)
    try:
        with PcscReader(section) as reader:
            result = reader.read(wait)
    except LinliError as err:
        raise _fail(err) from err
    today = dt.date.fromtimestamp(SYSTEM_CLOCK.time())
    out = {"reader": result.reader, **result.record.as_dict(today=today, mask=mask)}
    click.echo(json.dumps(out, ensure_ascii=False))
