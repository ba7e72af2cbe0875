"""Camera emulator: QR codes rendered into 640x480 gray frames with seeded, realistic distortions.

:class:`SimCamera` is the world object (``show(text)``, ``clear()``, ``unplug()``, ``freeze()``) and
hands out :class:`~device.scanner.camera.FrameSource` handles, so the real :class:`CameraScanner`
runs on it unchanged. :func:`generate_set` makes the seeded benchmark set of distorted codes with
their ground truth, and :func:`write_video` writes frames to a file the real ``cv2.VideoCapture``
reads.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import segno

from device.errors import DeviceClosedError, DeviceUnavailableError

Frame = npt.NDArray[np.uint8]
WIDTH, HEIGHT = 640, 480
BACKGROUND = 200
QUIET_ZONE = 4
FOCAL_PX = 700.0  # a 640x480 webcam with a ~50 degree field of view
HARD_FRACTION = 1 / 6
FLAWS = ("small", "blurred", "tilted", "faded", "noisy")
PAPER_MARGIN = 2  # modules of white paper or screen around the quiet zone
BASE45 = string.digits + string.ascii_uppercase + " $%*+-./:"


@dataclass(frozen=True)
class Distortion:
    """How a code looks to the camera: size, pose, focus, sensor noise and print contrast."""

    module_px: float = 5.0  # pixels per QR module (scale / distance)
    angle_deg: float = 0.0  # in-plane rotation
    tilt_deg: float = 0.0  # the code's plane turned away from the camera (perspective)
    tilt_axis_deg: float = 0.0  # direction of the axis it is turned about
    blur_sigma: float = 0.0  # Gaussian blur (focus, motion)
    noise_sigma: float = 0.0  # sensor noise, grey levels
    contrast: float = 1.0  # 1: black on white; 0.3: grey on grey (faded print, glare)
    offset: tuple[float, float] = (0.0, 0.0)  # centre offset, fraction of the free space
    flaw: str = "none"  # label of the hard condition this stands for (benchmark breakdown)


def code_matrix(text: str) -> npt.NDArray[np.uint8]:
    """QR modules of ``text`` (1 = dark) with the quiet zone; never Micro QR (zbar skips those)."""
    qr = segno.make(text, micro=False)
    modules = np.array([list(row) for row in qr.matrix], dtype=np.uint8)
    return np.pad(modules, QUIET_ZONE, constant_values=0)


def render_code(
    text: str,
    distortion: Distortion = Distortion(),
    rng: np.random.Generator | None = None,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Frame:
    """A ``size`` grayscale frame showing ``text`` as a QR code, distorted as asked."""
    rng = rng if rng is not None else np.random.default_rng(0)
    width, height = size
    modules = code_matrix(text)
    n = modules.shape[0]
    # Render at an integer scale, then let the warp resample to the asked one (like a lens would).
    pixels = np.where(modules == 1, 0, 255).astype(np.uint8)
    texel = max(1, int(np.ceil(distortion.module_px)))
    margin = PAPER_MARGIN * texel
    code = cv2.resize(pixels, (n * texel, n * texel), interpolation=cv2.INTER_NEAREST)
    # The code is printed on (or shown by) something lighter than the scene around it.
    code = cv2.copyMakeBorder(code, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    side = min(n * distortion.module_px, 0.8 * min(width, height))
    lo, hi = margin, margin + n * texel
    src = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, _corners(side, distortion, size))
    frame = cv2.warpPerspective(code, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    paper = cv2.warpPerspective(np.full_like(code, 255), matrix, size, borderValue=0)
    composed: Frame = np.where(paper > 0, frame, _scene(size)).astype(np.uint8)
    return _photometric(composed, distortion, rng)


_scenes: dict[tuple[int, int], Frame] = {}


def _scene(size: tuple[int, int]) -> Frame:
    if size not in _scenes:
        _scenes[size] = empty_scene(np.random.default_rng(12345), size)
    return _scenes[size]


def _corners(side: float, d: Distortion, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    half = side / 2
    square = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
    # In-plane rotation, then a tilt of the plane about an in-plane axis, then a pinhole projection.
    theta, phi, tilt = np.deg2rad([d.angle_deg, d.tilt_axis_deg, d.tilt_deg])
    spin = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    pts3 = square @ spin.T @ _axis_rotation(np.array([np.cos(phi), np.sin(phi), 0.0]), tilt).T
    depth = FOCAL_PX + pts3[:, 2]
    pts = FOCAL_PX * pts3[:, :2] / depth[:, None]
    # Shift within the free space left once the code is in the frame.
    width, height = size
    span = pts.max(axis=0) - pts.min(axis=0)
    free = np.maximum(np.array([width, height]) - span, 0) / 2
    centre = np.array([width / 2, height / 2]) + np.array(d.offset) * free
    corners: npt.NDArray[np.float32] = (
        pts - (pts.max(axis=0) + pts.min(axis=0)) / 2 + centre
    ).astype(np.float32)
    return corners


def _axis_rotation(axis: npt.NDArray[np.float64], angle: float) -> npt.NDArray[np.float64]:
    """Rodrigues' rotation matrix about a unit ``axis``."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    rotation: npt.NDArray[np.float64] = (
        np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    )
    return rotation


def _photometric(frame: Frame, d: Distortion, rng: np.random.Generator) -> Frame:
    # White paper in a grey scene: the code's quiet zone stays white, the rest is background.
    img: npt.NDArray[Any] = frame.astype(np.float32)
    dark = 128 * (1 - d.contrast)
    light = 255 - 40 * (1 - d.contrast)
    img = dark + (light - dark) * img / 255
    if d.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), d.blur_sigma)
    if d.noise_sigma > 0:
        img = img + rng.normal(0, d.noise_sigma, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def empty_scene(
    rng: np.random.Generator | None = None, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> Frame:
    """A frame with no code: a soft gradient with some clutter and noise, like a counter top."""
    rng = rng if rng is not None else np.random.default_rng(0)
    width, height = size
    ramp: npt.NDArray[Any] = np.linspace(150, 220, width, dtype=np.float32)[None, :].repeat(
        height, axis=0
    )
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(20, 160)), int(rng.integers(10, 80))
        cv2.rectangle(ramp, (x, y), (x + w, y + h), float(rng.uniform(40, 240)), thickness=-1)
    ramp += rng.normal(0, 4, ramp.shape).astype(np.float32)
    scene: Frame = np.clip(ramp, 0, 255).astype(np.uint8)
    return scene


# -- seeded sets ---------------------------------------------------------------------------------
def random_text(rng: np.random.Generator) -> str:
    """What residents show: credentials (``LQ1:`` + base45), links, Chinese text, numbers."""
    kind = rng.choice(["credential", "url", "chinese", "number"], p=[0.5, 0.2, 0.15, 0.15])
    if kind == "credential":
        n = int(rng.integers(60, 220))
        return "LQ1:" + "".join(BASE45[i] for i in rng.integers(0, len(BASE45), n))
    if kind == "url":
        token = "".join(
            string.ascii_letters[i] for i in rng.integers(0, 52, int(rng.integers(8, 40)))
        )
        return f"https://linli.example.cn/l/{token}"
    if kind == "chinese":
        words = [
            "居住证明",
            "邻里",
            "社区服务中心",
            "高龄补贴认证",
            "办事指南",
            "取件码",
            "一户一档",
        ]
        picked = rng.choice(words, size=int(rng.integers(1, 4)))
        return "".join(str(w) for w in picked) + str(int(rng.integers(0, 10_000)))
    return str(int(rng.integers(10**11, 10**12)))


def random_distortion(rng: np.random.Generator) -> Distortion:
    """Mostly a code held reasonably well; about one in six has one hard flaw on top.

    The flaws are what kiosks meet: a code held far away (small), out of focus or moving (blurred),
    held at a slant (tilted), a faded print or a phone screen in glare (faded), a dark corner
    (noisy).
    """
    easy = Distortion(
        module_px=float(rng.uniform(3.0, 7.0)),
        angle_deg=float(rng.uniform(-180, 180)),
        tilt_deg=float(rng.uniform(0, 25)),
        tilt_axis_deg=float(rng.uniform(0, 180)),
        blur_sigma=float(rng.uniform(0, 1.0)),
        noise_sigma=float(rng.uniform(0, 8)),
        contrast=float(rng.uniform(0.5, 1.0)),
        offset=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
    )
    if rng.random() >= HARD_FRACTION:
        return easy
    flaw = str(rng.choice(FLAWS))
    hard: dict[str, float] = {
        "small": {"module_px": float(rng.uniform(1.6, 3.0))},
        "blurred": {"blur_sigma": float(rng.uniform(1.0, 3.0))},
        "tilted": {"tilt_deg": float(rng.uniform(25, 60))},
        "faded": {"contrast": float(rng.uniform(0.12, 0.5))},
        "noisy": {"noise_sigma": float(rng.uniform(10, 40))},
    }[flaw]
    return replace(easy, flaw=flaw, **hard)  # type: ignore[arg-type]  # float fields only


@dataclass(frozen=True)
class GeneratedCode:
    """One image of the benchmark set and the text it encodes (ground truth)."""

    text: str
    image: Frame
    distortion: Distortion


def generate_set(n: int, seed: int) -> Iterator[GeneratedCode]:
    """``n`` seeded distorted code images; the same seed always gives the same set."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        text = random_text(rng)
        distortion = random_distortion(rng)
        yield GeneratedCode(text, render_code(text, distortion, rng), distortion)


# -- the camera ----------------------------------------------------------------------------------
class SimCamera:
    """The world side of an emulated camera: what is in front of it, and whether it is working.

    ``open()`` (use it as the scanner's ``open_source``) returns a frame source; it raises
    :class:`DeviceUnavailableError` while the camera is unplugged. A frozen camera is open but
    gives no frames (a hung USB camera).
    """

    def __init__(self, distortion: Distortion = Distortion(), seed: int = 0) -> None:
        self.distortion = distortion
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._frame = empty_scene(self._rng)
        self._empty = self._frame
        self.text: str | None = None
        self.plugged = True
        self.frozen = False
        self.opens = 0
        self.frames_served = 0

    def show(self, text: str, distortion: Distortion | None = None) -> None:
        """Hold ``text`` as a QR code in front of the lens."""
        frame = render_code(text, distortion or self.distortion, self._rng)
        with self._lock:
            self.text, self._frame = text, frame

    def show_image(self, image: Frame) -> None:
        """Put any grayscale image in front of the lens (e.g. a code with a bad payload)."""
        with self._lock:
            self.text, self._frame = None, image

    def clear(self) -> None:
        """Nothing in front of the lens: an empty scene."""
        with self._lock:
            self.text, self._frame = None, self._empty

    def unplug(self) -> None:
        self.plugged = False

    def plug(self) -> None:
        self.plugged = True

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) giving frames while staying open."""
        self.frozen = frozen

    def open(self) -> SimCameraSource:
        if not self.plugged:
            raise DeviceUnavailableError("simulated camera is unplugged")
        self.opens += 1
        return SimCameraSource(self)

    def current_frame(self) -> Frame | None:
        if not self.plugged or self.frozen:
            return None
        with self._lock:
            self.frames_served += 1
            return self._frame


class SimCameraSource:
    """A :class:`~device.scanner.camera.FrameSource` handle on a :class:`SimCamera`."""

    def __init__(self, camera: SimCamera) -> None:
        self._camera: SimCamera | None = camera

    def read(self) -> Frame | None:
        if self._camera is None:
            raise DeviceClosedError("simulated camera source used after close()")
        if not self._camera.plugged:
            raise DeviceUnavailableError("simulated camera unplugged while reading")
        return self._camera.current_frame()

    def close(self) -> None:
        self._camera = None


class FrameListSource:
    """A frame source cycling through pre-rendered frames (benchmarks time decoding only)."""

    def __init__(self, frames: Sequence[Frame]) -> None:
        if not frames:
            raise ValueError("FrameListSource needs at least one frame")
        self._frames = frames
        self._index = 0

    def read(self) -> Frame | None:
        frame = self._frames[self._index % len(self._frames)]
        self._index += 1
        return frame

    def close(self) -> None:
        self._index = 0


def write_video(path: str | Path, frames: Sequence[Frame], fps: float = 10.0) -> Path:
    """Write grayscale frames to an MJPG ``.avi`` file that ``cv2.VideoCapture`` can play back."""
    path = Path(path)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height), False
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MJPG video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path
