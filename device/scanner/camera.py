"""Camera QR scanner: frames from a :class:`FrameSource`, decoded by zbar with OpenCV as a second
decoder.

The real source wraps ``cv2.VideoCapture`` (a V4L2 index, a device path, a file or a stream URL);
the simulator supplies its own through the same protocol. :class:`CameraScanner` paces frames at
``max_fps`` on the injected clock, reports a code held in front of the lens once per ``dedupe_s``
and reopens a camera that fails or stops giving frames, logging "unavailable" once and "back" once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode

from device.clock import SYSTEM_CLOCK, Clock
from device.config import ScannerSection
from device.errors import DeviceClosedError, DeviceError, DeviceUnavailableError, ProtocolError
from device.scanner.events import (
    ScanEvent,
    ScanRejectedError,
    log_rejection,
    make_event,
    repair_mojibake,
    validate_payload,
)

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
DEFAULT_MAX_LENGTH = ScannerSection().max_length


class FrameSource(Protocol):
    """Where frames come from: ``read()`` gives a gray or BGR frame, or None when none is ready."""

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class VideoCaptureSource:
    """A :class:`FrameSource` over ``cv2.VideoCapture``; ``source`` "0" is a camera index."""

    def __init__(self, source: str, width: int = 640, height: int = 480) -> None:
        self.source = source
        target: int | str = int(source) if source.isdigit() else source
        self._capture: cv2.VideoCapture | None = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            self._capture.release()
            self._capture = None
            raise DeviceUnavailableError(
                f"camera {source!r} did not open: check the device is plugged in, or the path/URL"
            )
        if isinstance(target, int):
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._closed = False

    def read(self) -> Frame | None:
        if self._closed or self._capture is None:
            raise DeviceClosedError(f"camera {self.source!r} used after close()")
        ok, frame = self._capture.read()
        return np.asarray(frame, dtype=np.uint8) if ok and frame is not None else None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._closed = True

    def __enter__(self) -> VideoCaptureSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- pure decoding -------------------------------------------------------------------------------
def to_gray(image: npt.NDArray[Any]) -> Frame:
    """A grayscale uint8 view of a gray, BGR or BGRA image."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ProtocolError(f"frame of shape {image.shape} is neither grayscale nor BGR")
    return np.ascontiguousarray(gray, dtype=np.uint8)


def decode_zbar(gray: Frame) -> list[bytes]:
    """QR payloads zbar finds, as UTF-8 bytes with zbar's wrong Shift-JIS/Latin-1 guesses undone."""
    payloads = []
    for symbol in zbar_decode(gray, symbols=[ZBarSymbol.QRCODE]):
        data: bytes = symbol.data
        # Not UTF-8 at all: left as is, the validator refuses it with reason not_utf8.
        with contextlib.suppress(UnicodeDecodeError):
            data = repair_mojibake(data.decode("utf-8")).encode("utf-8")
        payloads.append(data)
    return payloads


_detector_local = threading.local()


def decode_opencv(gray: Frame) -> list[bytes]:
    """The QR payload OpenCV's QRCodeDetector finds (raw bytes when this OpenCV offers them)."""
    detector = getattr(_detector_local, "detector", None)
    if detector is None:
        detector = _detector_local.detector = cv2.QRCodeDetector()
    try:
        if hasattr(detector, "detectAndDecodeBytes"):
            data: bytes = detector.detectAndDecodeBytes(gray)[0]
        else:  # OpenCV < 4.11 only gives text
            data = detector.detectAndDecode(gray)[0].encode("utf-8")
    except cv2.error as err:
        log.debug("OpenCV QR decoder failed on a frame: %s", err)
        return []
    return [bytes(data)] if data else []


def decode_payloads(image: npt.NDArray[Any], fallback: bool = True) -> list[bytes]:
    """Raw payloads in an image: zbar first, then OpenCV if zbar found nothing and ``fallback``."""
    gray = to_gray(image)
    payloads = decode_zbar(gray)
    if not payloads and fallback:
        payloads = decode_opencv(gray)
    return payloads


def decode_image(
    image: npt.NDArray[Any], max_length: int = DEFAULT_MAX_LENGTH, fallback: bool = True
) -> list[str]:
    """The valid QR texts in a grayscale or BGR image; refused payloads are logged and left out."""
    texts = []
    for payload in decode_payloads(image, fallback):
        try:
            texts.append(validate_payload(payload, max_length))
        except ScanRejectedError as err:
            log_rejection(err, "image")
    return texts


# -- the scanner ---------------------------------------------------------------------------------
class CameraScanner:
    """Pulls frames at most ``max_fps``, decodes them and delivers de-duplicated scan events.

    ``open_source`` opens the camera (default: :class:`VideoCaptureSource` on ``camera_source``) and
    raises :class:`DeviceUnavailableError` when it cannot; a source that gives no frame for
    ``stall_s`` seconds is closed and reopened every ``reconnect_s``. ``on_reject`` hears of every
    refused code (a locker audits them); frames that cannot be decoded at all are only counted.
    """

    def __init__(
        self,
        config: ScannerSection,
        open_source: Callable[[], FrameSource] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        fallback: bool = True,
        stall_s: float = 2.0,
        *,
        on_reject: Callable[[ScanRejectedError], None] | None = None,
    ) -> None:
        self.config = config
        self.source = f"camera:{config.camera_source}"
        self._on_reject = on_reject
        self._open_source = open_source or self._open_capture
        self._clock = clock
        self._fallback = fallback
        self._stall_s = stall_s
        self._frame_source: FrameSource | None = None
        self._closed = False
        # Guards the source: close() from another thread must not release it mid-read.
        self._io_lock = threading.RLock()
        self._outage = False
        self._retry_at = float("-inf")
        self._next_frame_at = float("-inf")
        self._last_frame_at = 0.0
        self._seen: dict[bytes, float] = {}
        self._backlog: list[ScanEvent] = []
        self.frames = 0
        """Frames decoded so far."""
        self.rejections: Counter[str] = Counter()

    def _open_capture(self) -> FrameSource:
        cfg = self.config
        return VideoCaptureSource(cfg.camera_source, cfg.camera_width, cfg.camera_height)

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> CameraScanner:
        """Open the camera now if it is there; if not, keep retrying while polling."""
        self._check_open()
        self._connect()
        return self

    @property
    def available(self) -> bool:
        return self._frame_source is not None

    def close(self) -> None:
        with self._io_lock:
            self._closed = True
            self._drop_source()

    def __enter__(self) -> CameraScanner:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scanning --------------------------------------------------------------------------------
    def poll(self) -> list[ScanEvent]:
        """Wait for the next frame slot (``1/max_fps``), grab and decode one frame; [] if none."""
        self._check_open()
        now = self._clock.monotonic()
        if now < self._next_frame_at:
            self._clock.sleep(self._next_frame_at - now)
            now = self._clock.monotonic()
        self._next_frame_at = now + 1.0 / self.config.max_fps
        frame = self._grab(now)
        if frame is None:
            return []
        self.frames += 1
        try:
            payloads = decode_payloads(frame, self._fallback)
        except (ProtocolError, cv2.error) as err:
            # A source giving odd frames (wrong depth or shape) must not stop the loop.
            self.rejections["bad_frame"] += 1
            log.debug("camera %s: frame not decodable: %s", self.config.camera_source, err)
            return []
        return self._events_from(payloads, now)

    def read_event(self, timeout: float) -> ScanEvent | None:
        """The next new scan, or None after ``timeout`` seconds (on the injected clock)."""
        self._check_open()
        if self._backlog:
            return self._backlog.pop(0)
        deadline = self._clock.monotonic() + timeout
        pending: list[ScanEvent] = []
        while not pending:
            if self._clock.monotonic() >= deadline:
                return None
            pending = self.poll()
        # Two different codes in one frame: keep the others for the next call.
        self._backlog = pending[1:]
        return pending[0]

    def events(self, stop: threading.Event | None = None) -> Iterator[ScanEvent]:
        """Yield scans until the scanner is closed or ``stop`` is set."""
        while not self._closed and not (stop is not None and stop.is_set()):
            try:
                batch = self.poll()
            except DeviceClosedError:
                return
            yield from batch

    # -- internals -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError(
                f"camera scanner {self.config.camera_source!r} used after close()"
            )

    def _connect(self) -> FrameSource | None:
        if self._frame_source is not None or self._closed:
            return self._frame_source
        now = self._clock.monotonic()
        if now < self._retry_at:
            return None
        try:
            self._frame_source = self._open_source()
        except DeviceError as err:
            self._retry_at = now + self.config.reconnect_s
            if not self._outage:
                self._outage = True
                log.warning("camera %s unavailable (%s); retrying", self.config.camera_source, err)
            return None
        self._last_frame_at = now
        if self._outage:
            self._outage = False
            log.warning("camera %s back", self.config.camera_source)
        return self._frame_source

    def _drop_source(self) -> None:
        source, self._frame_source = self._frame_source, None
        if source is not None:
            try:
                source.close()
            except (DeviceError, cv2.error) as err:
                log.debug("closing camera %s: %s", self.config.camera_source, err)

    def _lost(self, reason: str) -> None:
        if not self._outage:
            self._outage = True
            log.warning("camera %s unavailable (%s); reopening", self.config.camera_source, reason)
        self._drop_source()
        self._retry_at = self._clock.monotonic() + self.config.reconnect_s

    def _grab(self, now: float) -> Frame | None:
        with self._io_lock:
            self._check_open()
            source = self._connect()
            if source is None:
                return None
            try:
                frame = source.read()
            except (DeviceError, cv2.error) as err:
                self._lost(str(err))
                return None
            if frame is None:
                if now - self._last_frame_at >= self._stall_s:
                    self._lost(f"no frame for {self._stall_s} s")
                return None
            self._last_frame_at = now
            return frame

    def _events_from(self, payloads: list[bytes], now: float) -> list[ScanEvent]:
        window = self.config.dedupe_s
        self._seen = {t: at for t, at in self._seen.items() if now - at < window}
        events = []
        for payload in payloads:
            # Keyed on the payload, so a refused code held in view is also refused (and logged)
            # once.
            if payload in self._seen:
                continue
            self._seen[payload] = now
            try:
                event = make_event(payload, self.source, self._clock.time(), self.config.max_length)
            except ScanRejectedError as err:
                self.rejections[err.reason] += 1
                if self._on_reject is not None:
                    self._on_reject(err)
                continue
            events.append(event)
        return events
