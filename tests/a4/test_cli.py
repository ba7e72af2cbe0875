"""`linli a4` against the real private cupsd: a failed print exits non-zero and keeps the job."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from hardware_sim.cups import CupsTestServer, SimQueue
from linli.cli import cli


def test_print_pending_retry(
    cupsd: CupsTestServer, queue: SimQueue, tmp_path: Path, two_page_pdf: bytes
) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text(
        f'[device]\nid = "k1"\nkind = "kiosk"\ndata_dir = "{tmp_path}"\n'
        f'[a4printer]\nqueue = "{queue.name}"\npoll_interval_s = 0.05\n',
        encoding="utf-8",
    )
    pdf = tmp_path / "cert.pdf"
    pdf.write_bytes(two_page_pdf)
    common = ["--config", str(config), "--server", cupsd.socket]
    runner = CliRunner()
    cupsd.disable(queue.name, "toner")
    failed = runner.invoke(cli, ["a4", "print", str(pdf), "--timeout", "5", *common])
    assert failed.exit_code != 0
    assert "QueueStoppedError" in failed.output and "toner" in failed.output
    status = runner.invoke(cli, ["a4", "status", *common])
    assert json.loads(status.output)["state"] == "stopped"
    pending = runner.invoke(cli, ["a4", "pending", *common])
    (kept,) = [json.loads(line) for line in pending.output.splitlines()]
    assert kept["title"] == "cert.pdf" and kept["attempts"] == 1
    retried = runner.invoke(cli, ["a4", "retry", "--all", "--enable", *common])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output)["printed"] == kept["key"]
    assert len(queue.wait_for_output(1)) == 1
    assert runner.invoke(cli, ["a4", "pending", *common]).output == ""
