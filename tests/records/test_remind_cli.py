"""`linli records remind`: the subsidy reminder through the server's configured notifiers."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from device.credential import generate_signing_key, save_signing_key
from linli.cli import cli
from sync_server.domain_models import Notification
from tests.records.test_query import loaded  # noqa: F401


def write_config(tmp_path: Path, engine: Engine) -> Path:
    for name in ("ca.crt", "pw"):
        (tmp_path / name).write_text("unused here", encoding="utf-8")
    save_signing_key(generate_signing_key("srv-1"), tmp_path / "key.pem")
    url = engine.url.render_as_string(hide_password=False)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[broker]\nca = "ca.crt"\nuser = "s"\npassword_file = "pw"\n'
        '[signing]\nkey = "key.pem"\nkid = "srv-1"\n',
        encoding="utf-8",
    )
    return config


def test_reminders_are_recorded_once_and_never_print_phones(
    loaded: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, loaded)
    args = [
        *("records", "remind", "--config", str(config), "--community", "C01"),
        *("--subsidy-missing", "2026", "--deadline", "2026年12月31日", "--place", "社区服务站"),
    ]
    runner = CliRunner()
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    due, with_phone = map(int, re.findall(r"\d+", dry.output)[:2])
    assert due >= with_phone >= 2
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert f"{with_phone} reminders requested" in first.output
    assert "138" not in first.output
    with loaded.connect() as conn:
        rows = conn.execute(select(Notification.status, Notification.template)).all()
    assert len(rows) == with_phone
    assert {tuple(r) for r in rows} == {("recorded", "subsidy.reminder")}
    second = runner.invoke(cli, args)
    assert second.exit_code == 0
    with loaded.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(Notification)).scalar_one() == with_phone
        )
