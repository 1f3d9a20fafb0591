"""Frames from a video file (MP4, AVI, MOV, MKV, ...) decoded by OpenCV.

OpenCV never raises on bad input: ``VideoCapture.isOpened()`` is False for a
file no backend can read, and ``read()`` returns ``(False, None)`` at the end
*and* at damage. So:

- a file OpenCV cannot open is an :class:`~plstream.acquire_adapters.base.InputError`
  at open, and a first frame that cannot be decoded a
  :class:`~plstream.acquire_adapters.base.CorruptInputError` at open;
- when the stream ends having decoded fewer frames than the container
  declares (``CAP_PROP_FRAME_COUNT``), iteration raises CorruptInputError
  naming both numbers, after the frames that did decode (those stay valid).
  Frames beyond the declared count are yielded (the count is a container
  estimate).

Frames: OpenCV decodes to 8-bit BGR. When all three channels are equal
(grey video) one channel is taken exactly; otherwise
``cv2.cvtColor(..., COLOR_BGR2GRAY)`` (``0.299 R + 0.587 G + 0.114 B``,
rounded). Timestamps are ``seq / frame_rate_hz`` when the container states a
rate, else the read time.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from plstream.acquire_adapters.base import CorruptInputError, Frame, InputError

__all__ = ["VideoSource"]

logger = logging.getLogger(__name__)


def _grey(frame: np.ndarray) -> np.ndarray:
    """A decoded frame as one grey channel (see the module docstring)."""
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        blue, green, red = frame[:, :, 0], frame[:, :, 1], frame[:, :, 2]
        if np.array_equal(blue, green) and np.array_equal(blue, red):
            return np.ascontiguousarray(blue)
        code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(frame, code)
    raise ValueError(f"a decoded frame of shape {frame.shape} is not an image")


class VideoSource:
    """A video file as a :class:`~plstream.acquire_adapters.base.FrameSource`.

    Parameters
    ----------
    path : path-like
        The video.
    max_frame_bytes : int
        Largest declared size of one decoded (BGR) frame, checked before the first is decoded.

    Raises
    ------
    InputError
        Missing, OpenCV cannot open it, or its frames are larger than ``max_frame_bytes``.
    CorruptInputError
        Its first frame cannot be decoded.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_frame_bytes: int = 2**31) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._path = Path(path)
        self._name = str(path)
        self._closed = False
        self._stop_requested = False
        if not self._path.is_file():
            raise InputError(self._name, "no such file" if not self._path.exists() else "is not a file")
        capture, first = self._start()
        self._pending: tuple[cv2.VideoCapture, np.ndarray] | None = (capture, first)
        self._capture: cv2.VideoCapture | None = capture
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self._declared = int(round(count)) if math.isfinite(count) and count >= 1 else None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._frame_rate_hz = float(fps) if math.isfinite(fps) and fps > 0 else None
        code = int(capture.get(cv2.CAP_PROP_FOURCC))
        self._codec = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if code > 0 else ""
        self._backend = capture.getBackendName()
        self._shape = first.shape
        self._dtype = first.dtype

    def _start(self) -> tuple[cv2.VideoCapture, np.ndarray]:
        """Open the file and decode its first frame."""
        capture = cv2.VideoCapture(self._name)
        if not capture.isOpened():
            capture.release()
            raise InputError(
                self._name,
                "OpenCV cannot open it as a video (no backend recognises it); convert it "
                "to a TIFF stack or an MP4 file (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)",
            )
        width = capture.get(cv2.CAP_PROP_FRAME_WIDTH)
        height = capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if math.isfinite(width * height) and width * height * 3 > self._max_frame_bytes:
            capture.release()
            raise InputError(
                self._name,
                f"declares {int(height)}x{int(width)} colour frames = "
                f"{int(width * height * 3)} bytes, more than max_frame_bytes="
                f"{self._max_frame_bytes}; pass a larger max_frame_bytes if it is genuine",
            )
        ok, raw = capture.read()
        if not ok or raw is None:
            capture.release()
            raise CorruptInputError(
                self._name,
                "OpenCV opened it but could not decode frame 0; the file is damaged "
                "or uses a codec this OpenCV lacks (convert it to a TIFF stack)",
            )
        try:
            return capture, _grey(raw)
        except ValueError as exc:
            capture.release()
            raise CorruptInputError(self._name, f"frame 0: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message."""
        return {
            "source": "video",
            "path": self._name,
            "shape": list(self._shape),
            "dtype": self._dtype.name,
            "n_frames": self._declared,
            "frame_rate_hz": self._frame_rate_hz,
            "codec": self._codec,
            "backend": self._backend,
        }

    def __iter__(self) -> Iterator[Frame]:
        """Yield every decodable frame; raise CorruptInputError at the end if fewer than declared."""
        if self._closed:
            raise ValueError(f"{self._name}: the source is closed; open it again")
        if self._pending is not None:
            capture, data = self._pending
            self._pending = None
        else:
            capture, data = self._start()
        self._capture = capture
        rate = self._frame_rate_hz
        seq = 0
        try:
            while True:
                yield Frame(seq=seq, timestamp=seq / rate if rate else time.time(), data=data, metadata={})
                seq += 1
                if self._closed or self._stop_requested:
                    return
                ok, raw = capture.read()
                if not ok or raw is None:
                    break
                try:
                    data = _grey(raw)
                except ValueError as exc:
                    raise CorruptInputError(self._name, f"frame {seq}: {exc}") from exc
                if data.shape != self._shape or data.dtype != self._dtype:
                    raise CorruptInputError(
                        self._name, f"frame {seq} is {data.shape} {data.dtype}, frame 0 is {self._shape} {self._dtype}"
                    )
        finally:
            capture.release()
        if self._declared is not None and seq < self._declared:
            raise CorruptInputError(
                self._name,
                f"declares {self._declared} frames but only {seq} could be decoded (frames 0..{seq - 1} were "
                "delivered); the file is probably truncated or damaged",
            )
        if self._declared is not None and seq > self._declared:
            logger.info("%s: decoded %d frames, the container declared %d", self._name, seq, self._declared)

    def stop(self) -> None:
        """End an iteration in progress before its next frame; safe from another thread."""
        self._stop_requested = True

    def close(self) -> None:
        """Release the decoder; safe to call twice."""
        self._closed = True
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
