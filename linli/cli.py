"""The ``linli`` console script: one entry point; each area of the project adds subcommands."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from device.errors import LinliError
from device.privacy import install_redaction

# Subcommand name -> "module:attribute". A command's module is imported only when that command
# runs (or when help lists every command): `linli locker run` on a device then loads the locker's
# code alone, not the server's, the simulator's or the benchmarks' (about a second at each start).
COMMANDS = {
    "idcard": "linli.commands.idcard:idcard",
    "card": "linli.commands.pcsc:card",
    "scan": "linli.commands.scan:scan",
    "sim": "linli.commands.sim:sim",
    "bench": "linli.commands.bench:bench",
    "watch": "linli.commands.watch:watch",
    "a4": "linli.commands.a4:a4",
    "escpos": "linli.commands.escpos:escpos",
    "certificate": "linli.commands.certificate:certificate",
    "provision": "linli.commands.provision:provision",
    "server": "linli.commands.server:server",
    "records": "linli.commands.records:records",
    "sync": "linli.commands.sync:sync",
    "locker": "linli.commands.locker:locker",
    "kiosk": "linli.commands.kiosk:kiosk",
}


class LazyGroup(click.Group):
    """A click group whose subcommands (``COMMANDS``) are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise TypeError(f"{self.lazy[cmd_name]} is not the click command {cmd_name!r}")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="linli")
def cli(verbose: int) -> None:
    """Linli (邻里): firmware and tools for community kiosks and document lockers."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()


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
