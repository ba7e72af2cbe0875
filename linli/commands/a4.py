"""`linli a4`: print PDFs on the A4 printer through CUPS, show the queue, retry kept jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from device.a4 import A4Printer, A4PrinterError
from device.atrest import DeviceKey, KeyFileError
from device.config import A4PrinterSection, load_config
from device.errors import ProtocolError

config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Device config (TOML): [a4printer] and [device].data_dir give the defaults.",
)
queue_option = click.option("--queue", help="CUPS queue name (default: from --config).")
server_option = click.option(
    "--server", envvar="CUPS_SERVER", help="cupsd host or socket path (default: libcups's)."
)


def _printer(
    config: str | None, queue: str | None, server: str | None, timeout: float | None = None
) -> A4Printer:
    loaded = load_config(config) if config else None
    section = loaded.a4printer if loaded else A4PrinterSection()
    data_dir = Path(loaded.device.data_dir if loaded else "/var/lib/linli")
    overrides: dict[str, Any] = {"queue": queue, "job_timeout_s": timeout}
    values = {**section.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        key = DeviceKey.for_data_dir(data_dir)
    except KeyFileError as err:
        raise click.ClickException(str(err)) from err
    return A4Printer(
        A4PrinterSection.model_validate(values), data_dir / "spool" / "a4", server=server, key=key
    )


def _fail(err: A4PrinterError) -> click.ClickException:
    kept = f" (job kept as {err.key}; `linli a4 retry {err.key}`)" if err.key else ""
    return click.ClickException(f"{type(err).__name__}: {err}{kept}")


@click.group()
def a4() -> None:
    """A4 printer (CUPS): print, queue status, kept jobs and retries."""


@a4.command("print")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@queue_option
@click.option(
    "--title",
    help="Title kept (sealed) with the job and shown by `linli a4 pending` (default: the file "
    "name); CUPS only sees linli-<key prefix>.",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Seconds before a job is stuck.")
@server_option
@config_option
def a4_print(  # noqa: PLR0917  # one parameter per click option
    file: Path,
    queue: str | None,
    title: str | None,
    timeout: float | None,
    server: str | None,
    config: str | None,
) -> None:
    """Print FILE (PDF) and wait until CUPS says it completed; on error the job is kept."""
    with _printer(config, queue, server, timeout) as printer:
        try:
            key = printer.submit(file, title or file.name)
        except A4PrinterError as err:
            raise _fail(err) from err
    click.echo(json.dumps({"printed": key}))


@a4.command("status")
@queue_option
@server_option
@config_option
def a4_status(queue: str | None, server: str | None, config: str | None) -> None:
    """Show the queue as JSON: accepting, state (idle/processing/stopped), reasons."""
    with _printer(config, queue, server) as printer:
        try:
            accepting, state, reasons = printer.queue_status()
        except A4PrinterError as err:
            raise _fail(err) from err
        click.echo(
            json.dumps(
                {
                    "queue": printer.config.queue,
                    "accepting": accepting,
                    "state": state,
                    "reasons": reasons,
                }
            )
        )


@a4.command("pending")
@server_option
@config_option
def a4_pending(server: str | None, config: str | None) -> None:
    """List jobs kept in the spool (not yet confirmed printed), one JSON line each."""
    with _printer(config, None, server) as printer:
        for entry in printer.pending():
            click.echo(
                json.dumps(
                    {
                        "key": entry.key,
                        "title": entry.title,
                        "attempts": entry.attempts,
                        "last_error": entry.last_error,
                    },
                    ensure_ascii=False,
                )
            )


@a4.command("retry")
@click.argument("key", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every kept job, oldest first.")
@click.option(
    "--enable", is_flag=True, help="cupsenable the queue first (after fixing the printer)."
)
@queue_option
@server_option
@config_option
def a4_retry(  # noqa: PLR0917  # one parameter per click option
    key: str | None,
    retry_all: bool,
    enable: bool,
    queue: str | None,
    server: str | None,
    config: str | None,
) -> None:
    """Print a kept job (KEY) or --all again; a job CUPS still holds is followed, not re-sent."""
    if bool(key) == retry_all:
        raise click.UsageError("give either KEY or --all")
    with _printer(config, queue, server) as printer:
        if enable:
            printer.enable_queue()
        keys = [e.key for e in printer.pending()] if retry_all else [str(key)]
        for one in keys:
            try:
                printer.retry(one)
            except KeyError as err:
                raise click.ClickException(f"no kept job {one!r} (see `linli a4 pending`)") from err
            except ProtocolError as err:
                raise click.ClickException(
                    f"kept job {one!r} cannot be read ({err}); moved to spool/a4/quarantine/"
                ) from err
            except A4PrinterError as err:
                raise _fail(err) from err
            click.echo(json.dumps({"printed": one}))
