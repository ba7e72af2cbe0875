"""The ``linli`` console script: one entry point; each area of the project adds subcommands."""

from __future__ import annotations

import logging
import sys

import click

from device.errors import LinliError
from device.privacy import install_redaction
from linli.commands import (
    a4,
    bench,
    certificate,
    idcard,
    kiosk,
    locker,
    pcsc,
    provision,
    records,
    scan,
    server,
    sim,
    sync,
    watch,
)
from linli.commands import escpos as escpos_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="linli")
def cli(verbose: int) -> None:
    """Linli (邻里): firmware and tools for community kiosks and document lockers."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()


cli.add_command(idcard.idcard)
cli.add_command(pcsc.card)
cli.add_command(scan.scan)
cli.add_command(sim.sim)
cli.add_command(bench.bench)
cli.add_command(watch.watch)
cli.add_command(a4.a4)
cli.add_command(escpos_commands.escpos)
cli.add_command(certificate.certificate)
cli.add_command(provision.provision)
cli.add_command(server.server)
cli.add_command(records.records)
cli.add_command(sync.sync)
cli.add_command(locker.locker)
cli.add_command(kiosk.kiosk)


def main() -> None:
    """Run the CLI; a Linli error becomes a one-line message and exit status 1."""
    try:
        # Without standalone mode click returns ctx.exit()'s status instead of exiting.
        status = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except LinliError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
