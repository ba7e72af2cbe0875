"""The top-level group imports a subcommand's module only when that subcommand is used."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from linli.cli import COMMANDS, LazyGroup

PROBE = """
import sys
from linli.cli import main
sys.argv = ["linli", *{argv!r}]
try:
    main()
except SystemExit as exc:
    assert exc.code == 0, exc.code
tops = {{"linli", "sync_server", "hardware_sim", "kivy", "escpos"}}
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in tops)))
"""


def _loaded(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(done.stdout.split("\n")[-2].split())


def test_a_device_command_loads_neither_the_server_nor_the_simulator() -> None:
    loaded = _loaded("locker", "run", "--help")
    assert "linli.commands.locker" in loaded
    assert not {m for m in loaded if m.startswith(("sync_server", "hardware_sim", "kivy"))}
    assert "linli.commands.server" not in loaded and "linli.commands.sim" not in loaded


def test_help_lists_every_command_with_its_summary() -> None:
    loaded = _loaded("--help")
    assert {spec.split(":")[0] for spec in COMMANDS.values()} <= loaded


def test_a_wrong_entry_is_refused_naming_it() -> None:
    group = LazyGroup(lazy={"oops": "linli.cli:COMMANDS"})
    with pytest.raises(TypeError, match=r"linli\.cli:COMMANDS is not the click command 'oops'"):
        group.get_command(click.Context(group), "oops")
