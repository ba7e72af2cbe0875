"""CameraScanner over the camera emulator (fake clock), and the real cv2.VideoCapture file path."""

from __future__ import annotations

import ast
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from device.clock import FakeClock
from device.config import ScannerSection
from device.errors import DeviceClosedError, DeviceUnavailableError, ProtocolError
from device.scanner.camera import (
    CameraScanner,
    VideoCaptureSource,
    decode_image,
    decode_payloads,
    decode_zbar,
)
from hardware_sim.camera import (
    Distortion,
    SimCamera,
    empty_scene,
    generate_set,
    render_code,
    write_video,
)
from tests.scanner.helpers import qr_image

CREDENTIAL = "LQ1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0B"
# Heavy sensor noise: zbar gives up on this one, OpenCV's detector still reads it.
NOISY = Distortion(
    module_px=5.7,
    angle_deg=28.4,
    tilt_deg=20.5,
    tilt_axis_deg=13.5,
    blur_sigma=0.13,
    noise_sigma=30.0,
    contrast=0.82,
    offset=(-0.2, -0.4),
)

pytestmark = pytest.mark.timeout(60)


def make_scanner(
    camera: SimCamera, clock: FakeClock, fallback: bool = True, **changes: object
) -> CameraScanner:
    values: dict[str, object] = {"backend": "camera", "max_fps": 10, "dedupe_s": 2.0}
    section = ScannerSection.model_validate({**values, **changes})
    return CameraScanner(section, open_source=camera.open, clock=clock, fallback=fallback)


def test_code_in_view_is_reported_once_within_dedupe_window() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock) as scanner:
        assert scanner.poll() == []
        camera.show(CREDENTIAL)
        first = scanner.poll()
        assert [e.text for e in first] == [CREDENTIAL]
        assert first[0].source == "camera:0"
        assert first[0].at == clock.time()
        # Held in front of the lens for 1.5 s more: no repeat.
        assert [e for _ in range(15) for e in scanner.poll()] == []
        clock.advance(1.0)  # now 2.5 s after the first report
        assert [e.text for e in scanner.poll()] == [CREDENTIAL]


def test_a_different_code_is_reported_at_once() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock) as scanner:
        camera.show("first code")
        assert [e.text for e in scanner.poll()] == ["first code"]
        camera.show("居住证明 二维码")
        assert [e.text for e in scanner.poll()] == ["居住证明 二维码"]


def test_frames_are_paced_at_max_fps() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock, max_fps=5) as scanner:
        start = clock.monotonic()
        for _ in range(11):
            scanner.poll()
        assert clock.monotonic() - start == pytest.approx(2.0)
        assert camera.frames_served == 11


def test_read_event_times_out_on_the_injected_clock() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock) as scanner:
        start = clock.monotonic()
        assert scanner.read_event(timeout=3) is None
        assert clock.monotonic() - start == pytest.approx(3.0, abs=0.11)
        camera.show("hello")
        event = scanner.read_event(timeout=1)
        assert event is not None and event.text == "hello"


def test_opencv_fallback_reads_what_zbar_cannot() -> None:
    image = render_code(CREDENTIAL, NOISY, np.random.default_rng(0))
    assert decode_zbar(image) == []
    assert decode_image(image) == [CREDENTIAL]
    assert decode_image(image, fallback=False) == []
    camera, clock = SimCamera(), FakeClock()
    camera.show_image(image)
    with make_scanner(camera, clock) as scanner:
        assert [e.text for e in scanner.poll()] == [CREDENTIAL]
    with make_scanner(camera, clock, fallback=False) as scanner:
        assert scanner.poll() == []


def test_bad_payload_in_view_is_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    camera, clock = SimCamera(), FakeClock()
    camera.show("A" * 40)
    with caplog.at_level(logging.WARNING), make_scanner(camera, clock, max_length=16) as scanner:
        assert [e for _ in range(5) for e in scanner.poll()] == []
    assert scanner.rejections == {"too_long": 1}
    assert "AAAA" not in caplog.text


def test_unplugged_camera_reconnects_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    camera, clock = SimCamera(), FakeClock()
    with caplog.at_level(logging.WARNING), make_scanner(camera, clock, reconnect_s=1) as scanner:
        camera.unplug()
        for _ in range(30):
            assert scanner.poll() == []
        assert not scanner.available
        camera.plug()
        camera.show("back again")
        events = [e for _ in range(15) for e in scanner.poll()]
    assert [e.text for e in events] == ["back again"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum(m.endswith("back") for m in messages) == 1


def test_camera_absent_at_start_does_not_raise() -> None:
    camera, clock = SimCamera(), FakeClock()
    camera.unplug()
    with make_scanner(camera, clock, reconnect_s=0.5) as scanner:
        assert scanner.poll() == [] and not scanner.available
        camera.plug()
        camera.show("late")
        assert [e.text for _ in range(10) for e in scanner.poll()] == ["late"]


def test_frozen_camera_is_reopened() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock, reconnect_s=0.5) as scanner:
        scanner.poll()
        camera.freeze()
        for _ in range(40):  # 4 s without a frame
            scanner.poll()
        assert camera.opens >= 2
        camera.freeze(False)
        camera.show("thawed")
        assert [e.text for _ in range(10) for e in scanner.poll()] == ["thawed"]


def test_close_twice_and_use_after_close() -> None:
    scanner = make_scanner(SimCamera(), FakeClock()).open()
    scanner.close()
    scanner.close()
    with pytest.raises(DeviceClosedError):
        scanner.poll()
    assert list(scanner.events()) == []


def test_events_iterator_with_a_stop_flag() -> None:
    camera, clock = SimCamera(), FakeClock()
    stop = threading.Event()
    camera.show("one")
    with make_scanner(camera, clock) as scanner:
        got = []
        for event in scanner.events(stop):
            got.append(event.text)
            stop.set()
    assert got == ["one"]


# -- pure decoding -------------------------------------------------------------------------------
def test_decode_image_takes_bgr_and_gray() -> None:
    gray = qr_image("邻里 kiosk")
    bgr = np.dstack([gray, gray, gray])
    assert decode_image(gray) == decode_image(bgr) == ["邻里 kiosk"]
    assert decode_image(empty_scene()) == []


def test_decode_image_rejects_odd_arrays() -> None:
    with pytest.raises(ProtocolError):
        decode_payloads(np.zeros((4, 4, 2), np.uint8))


def test_generated_set_is_seeded_and_mostly_readable() -> None:
    first = list(generate_set(20, seed=5))
    again = list(generate_set(20, seed=5))
    assert [c.text for c in first] == [c.text for c in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert all(c.image.shape == (480, 640) for c in first)
    read = sum(c.text in decode_image(c.image, max_length=4096) for c in first)
    assert read >= 16


# -- the real OpenCV capture path ----------------------------------------------------------------
def test_video_file_through_real_videocapture(tmp_path: Path) -> None:
    frames = [empty_scene()] * 3 + [render_code(CREDENTIAL, Distortion(module_px=5))] * 5
    video = write_video(tmp_path / "scan.avi", frames, fps=10)
    section = ScannerSection(backend="camera", camera_source=str(video), max_fps=60)
    clock = FakeClock()
    with CameraScanner(section, clock=clock) as scanner:
        event = scanner.read_event(timeout=2)
    assert event is not None
    assert event.text == CREDENTIAL
    assert event.source == f"camera:{video}"


def test_video_capture_source_reads_frames_and_closes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "two.avi", [empty_scene()] * 2)
    source = VideoCaptureSource(str(video))
    frame = source.read()
    assert frame is not None and frame.shape[:2] == (480, 640)
    source.close()
    source.close()
    with pytest.raises(DeviceClosedError):
        source.read()


def test_missing_video_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="did not open"):
        VideoCaptureSource(str(tmp_path / "none.avi"))


def test_device_package_never_imports_the_simulator() -> None:
    root = Path(__file__).resolve().parents[2] / "device"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "hardware_sim"]
    assert offenders == []


def test_odd_frames_do_not_stop_the_loop() -> None:
    camera, clock = SimCamera(), FakeClock()
    with make_scanner(camera, clock) as scanner:
        camera.show_image(np.zeros((48, 64, 2), np.uint8))
        assert scanner.poll() == []
        assert scanner.rejections == {"bad_frame": 1}
        camera.show("recovered")
        assert [e.text for e in scanner.poll()] == ["recovered"]
