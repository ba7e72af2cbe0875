"""Every CLI command has --help text and is named in the README or docs (house rule 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from linli.cli import cli

ROOT = Path(__file__).resolve().parents[2]


CTX = click.Context(cli)


def _subcommand(group: click.Group, name: str) -> click.Command:
    """Through click's lookup, so the top level's lazily imported commands are included."""
    command = group.get_command(CTX, name)
    assert command is not None, f"{name} is listed but cannot be loaded"
    return command


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(CTX):
        command = _subcommand(group, name)
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


ALL = list(_commands(cli))


def _docs_text() -> str:
    texts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(texts)


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = _subcommand(command, name)
    assert command.help, f"linli {' '.join(path)} has no help text"


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_is_documented(path: tuple[str, ...]) -> None:
    assert f"linli {' '.join(path)}" in _docs_text()


def test_unknown_command_exits_non_zero() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code != 0
