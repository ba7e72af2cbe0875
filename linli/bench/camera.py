"""Camera scanner benchmark: frames/s decoded at 640x480, and success on seeded distorted codes.

Frames come from the camera emulator, rendered before timing starts, so the figures are decoding
only. The success rate is given for zbar alone and with OpenCV's fallback, to show what it adds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from device.clock import FakeClock
from device.config import ScannerSection
from device.scanner.camera import CameraScanner, decode_opencv, decode_zbar, to_gray
from hardware_sim.camera import (
    FrameListSource,
    empty_scene,
    generate_set,
    random_distortion,
    random_text,
    render_code,
)
from linli.bench import summarize, value


def run(n_codes: int = 500, n_frames: int = 200, seed: int = 20261123) -> list[dict[str, Any]]:
    """Frame rate over ``n_frames`` frames, then decode success over ``n_codes`` codes.

    Success is given for the scanner's path (zbar, then OpenCV when zbar finds nothing), for each
    decoder alone, and per kind of flaw of the generated set ("none" is a code held reasonably).
    """
    return [*_frame_rate(n_frames, seed), *_success(n_codes, seed)]


def _frame_rate(n_frames: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    # Half the frames show a code, half an empty scene (the fallback decoder runs on those).
    frames = [
        render_code(random_text(rng), random_distortion(rng), rng)
        if i % 2 == 0
        else empty_scene(rng)
        for i in range(n_frames)
    ]
    # A fake clock: the scanner's fps pacing must not count as decode time.
    config = ScannerSection(backend="camera", max_fps=60, dedupe_s=0)
    source = FrameListSource(frames)
    samples = []
    with CameraScanner(config, open_source=lambda: source, clock=FakeClock()) as scanner:
        for _ in range(n_frames):
            start = time.perf_counter()
            scanner.poll()
            samples.append(time.perf_counter() - start)
    mean = sum(samples) / len(samples)
    size = {"width": 640, "height": 480}
    results = [
        summarize("camera_frame_decode", "s", samples, **size),
        value("camera_fps", "frames/s", len(samples), 1.0 / mean, **size),
        summarize("camera_frame_decode_with_code", "s", samples[0::2], **size),
    ]
    if len(samples) > 1:
        results.append(summarize("camera_frame_decode_empty_scene", "s", samples[1::2], **size))
    return results


def _success(n_codes: int, seed: int) -> list[dict[str, Any]]:
    zbar_ok = both_ok = opencv_ok = 0
    by_flaw: dict[str, list[bool]] = defaultdict(list)
    for code in generate_set(n_codes, seed):
        want = code.text.encode("utf-8")
        gray = to_gray(code.image)
        zbar_found, opencv_found = decode_zbar(gray), decode_opencv(gray)
        zbar_ok += want in zbar_found
        opencv_ok += want in opencv_found
        # As the scanner does it: OpenCV is asked only when zbar found nothing.
        read = want in (zbar_found or opencv_found)
        both_ok += read
        by_flaw[code.distortion.flaw].append(read)
    results = [
        value("camera_decode_success", "ratio", n_codes, both_ok / n_codes, decoder="zbar+opencv"),
        value("camera_decode_success_zbar", "ratio", n_codes, zbar_ok / n_codes, decoder="zbar"),
        value(
            "camera_decode_success_opencv", "ratio", n_codes, opencv_ok / n_codes, decoder="opencv"
        ),
    ]
    for flaw, reads in sorted(by_flaw.items()):
        name = f"camera_decode_success_{flaw}"
        results.append(value(name, "ratio", len(reads), sum(reads) / len(reads), flaw=flaw))
    return results
