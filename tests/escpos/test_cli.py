"""`linli escpos render` and `linli escpos status` as a technician runs them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image
from pyzbar.pyzbar import decode

from device.escpos.receipt import Receipt, build_receipt
from hardware_sim.escpos.server import EscposTcpPrinter
from linli.cli import cli

RECEIPT = build_receipt(Receipt(title="回执", lines=["No. 1"], qr="LQ1:cli", footer="谢谢"))


def test_render_one_page(tmp_path: Path) -> None:
    stream = tmp_path / "r.bin"
    stream.write_bytes(RECEIPT)
    result = CliRunner().invoke(
        cli, ["escpos", "render", str(stream), "--png", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["files"] == [str(tmp_path / "o.png")]
    assert summary["pages"][0][:2] == ["回执", "No. 1"]
    assert [c.data for c in decode(Image.open(tmp_path / "o.png"))] == [b"LQ1:cli"]


def test_render_several_pages_numbers_the_files(tmp_path: Path) -> None:
    stream = tmp_path / "r.bin"
    stream.write_bytes(RECEIPT * 2)
    out = tmp_path / "o.png"
    result = CliRunner().invoke(cli, ["escpos", "render", str(stream), "--png", str(out)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o-1.png").exists() and (tmp_path / "o-2.png").exists()
    assert not out.exists()


def test_render_garbage_fails_with_the_offset(tmp_path: Path) -> None:
    stream = tmp_path / "g.bin"
    stream.write_bytes(b"hello\x1b\xfe")
    result = CliRunner().invoke(
        cli, ["escpos", "render", str(stream), "--png", str(tmp_path / "g.png")]
    )
    assert result.exit_code != 0
    assert "offset 5" in str(result.exception)


def test_status_of_an_emulated_printer() -> None:
    with EscposTcpPrinter(port=0) as tcp:
        ok = CliRunner().invoke(
            cli, ["escpos", "status", "--host", "127.0.0.1", "--port", str(tcp.port)]
        )
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.output)["ready"] is True
        tcp.paper_out()
        bad = CliRunner().invoke(
            cli, ["escpos", "status", "--host", "127.0.0.1", "--port", str(tcp.port)]
        )
        assert bad.exit_code == 1
        report = json.loads(bad.output)
        assert report["paper_out"] is True and report["problem"] == "PaperOutError"
