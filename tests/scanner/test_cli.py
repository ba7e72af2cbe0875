"""`linli scan ...` and `linli bench camera`, through click's runner and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from hardware_sim.camera import Distortion, empty_scene, render_code, write_video
from hardware_sim.scanner import Gm65Emulator
from linli.bench import camera as camera_bench
from linli.cli import cli
from tests.scanner.helpers import qr_image

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {
        "chinese": tmp_path / "居住证明.png",
        "empty": tmp_path / "empty.jpg",
        "broken": tmp_path / "broken.png",
        "missing": tmp_path / "missing.png",
    }
    cv2.imwrite(str(tmp_path / "tmp.png"), qr_image("居住证明 邻里"))
    (tmp_path / "tmp.png").rename(files["chinese"])
    cv2.imwrite(str(files["empty"]), empty_scene())
    files["broken"].write_bytes(b"\x89PNG not really")
    return files


def test_scan_image_one_line_per_file_and_keeps_going(images: dict[str, Path]) -> None:
    order = ["missing", "chinese", "broken", "empty"]
    result = CliRunner().invoke(cli, ["scan", "image", *(str(images[k]) for k in order)])
    assert result.exit_code == 1
    lines = json_lines(result.stdout)
    assert [line["file"] for line in lines] == [str(images[k]) for k in order]
    assert [line["text"] for line in lines] == [None, "居住证明 邻里", None, None]
    assert ["error" in line for line in lines] == [True, False, True, False]


def test_scan_image_all_good_exits_zero(images: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["scan", "image", str(images["chinese"])])
    assert result.exit_code == 0
    assert json_lines(result.stdout) == [{"file": str(images["chinese"]), "text": "居住证明 邻里"}]


def test_scan_image_as_a_real_process(images: dict[str, Path]) -> None:
    linli = REPO / ".venv" / "bin" / "linli"
    if not linli.exists():
        linli = Path(sys.executable).with_name("linli")
    proc = subprocess.run(
        [str(linli), "scan", "image", str(images["chinese"]), str(images["missing"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = json_lines(proc.stdout)
    assert lines[0] == {"file": str(images["chinese"]), "text": "居住证明 邻里"}
    assert lines[1]["text"] is None and "error" in lines[1]


@pytest.mark.parametrize(
    "args",
    [["scan"], ["scan", "image"], ["scan", "listen"], ["scan", "camera"], ["bench", "camera"]],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 3


def test_scan_listen_prints_scans_from_the_serial_module(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    with Gm65Emulator(link=str(link)) as emu:

        def show_later() -> None:
            time.sleep(0.3)
            emu.show("first")
            emu.show("第二")

        thread = threading.Thread(target=show_later)
        thread.start()
        result = CliRunner().invoke(cli, ["scan", "listen", "--port", str(link), "--count", "2"])
        thread.join()
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    assert [line["text"] for line in lines] == ["first", "第二"]
    assert lines[0]["source"] == f"serial:{link}"


def test_scan_listen_with_trigger(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    with Gm65Emulator(link=str(link), command_mode=True) as emu:
        emu.show("on demand")
        result = CliRunner().invoke(
            cli, ["scan", "listen", "--port", str(link), "--trigger", "--count", "1"]
        )
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[0]["text"] == "on demand"


def test_scan_camera_reads_a_video_file(tmp_path: Path) -> None:
    frames = [empty_scene()] * 2 + [render_code("camera scan 摄像头", Distortion(module_px=5))] * 4
    video = write_video(tmp_path / "clip.avi", frames)
    result = CliRunner().invoke(
        cli, ["scan", "camera", "--source", str(video), "--count", "1", "--max-fps", "60"]
    )
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[0]["text"] == "camera scan 摄像头"


def test_bad_option_value_names_the_key() -> None:
    result = CliRunner().invoke(cli, ["scan", "camera", "--source", "0", "--max-fps", "500"])
    assert result.exit_code != 0
    assert "max_fps" in str(result.exception)


def test_bench_camera_small_run() -> None:
    results = {r["name"]: r for r in camera_bench.run(n_codes=24, n_frames=10, seed=3)}
    assert results["camera_fps"]["value"] > 1
    assert results["camera_frame_decode"]["n"] == 10
    both = results["camera_decode_success"]["value"]
    zbar = results["camera_decode_success_zbar"]["value"]
    assert 0.6 <= zbar <= both <= 1.0
    assert np.isfinite(results["camera_frame_decode"]["p95"])
