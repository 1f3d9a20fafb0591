"""What one image popped from MMCore's circular buffer says: its seq, its time and its metadata.

Pure functions of the image's tags (a plain ``dict`` of strings, as MMCore
writes them); nothing here imports pymmcore-plus. Why ``seq`` comes from
``ImageNumber`` and the time from ``TimeReceivedByCore`` is explained in
:mod:`plstream.acquire_adapters.cameras.micromanager`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["TAG_IMAGE_NUMBER", "TAG_TIME_IN_CORE", "FrameDefaults", "ImageNumbering", "frame_metadata", "frame_time"]

logger = logging.getLogger(__name__)

TAG_IMAGE_NUMBER = "ImageNumber"
TAG_TIME_IN_CORE = "TimeReceivedByCore"
_TAG_ELAPSED = "ElapsedTime-ms"
_TAG_EXPOSURE = "Exposure-ms"
_TAG_CAMERA = "Camera"
_TAG_BINNING = "Binning"
_TAG_ROI_X = "ROI-X-start"
_TAG_ROI_Y = "ROI-Y-start"


def number(value: Any) -> float | None:
    """A tag or property value (usually a string) as a finite float, else None."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


class ImageNumbering:
    """Turns each popped image's ``ImageNumber`` into its ``seq`` and counts the images lost between them.

    ``seq = ImageNumber - first ImageNumber``, so an image MMCore discarded
    is a missing seq. When the number goes back (an MMCore older than 12.5
    restarts it at 0 when it clears its full buffer), the count goes on from
    the last seq plus ``capacity`` (the images the cleared buffer held):
    a lower bound, logged as such. An image without a number is counted as
    the next one (a loss before it would not show).

    Parameters
    ----------
    capacity : int
        Images the circular buffer holds.
    name : str
        The camera, for log messages.
    """

    def __init__(self, capacity: int, name: str) -> None:
        self._capacity = int(capacity)
        self._name = name
        self._offset = 0
        self._last_number = -1
        self._last_seq = -1
        self._warned_unnumbered = False
        self.lost = 0
        """Missing seqs so far."""
        self.gaps = 0
        """Places where seqs were missing."""

    def seq(self, image_number: float | None) -> int:
        """The seq of the next popped image, given its ``ImageNumber`` tag (None: absent)."""
        if image_number is None:
            if not self._warned_unnumbered:
                self._warned_unnumbered = True
                logger.warning("%s: images carry no ImageNumber; lost images will not show as gaps", self._name)
            current = self._last_number + 1
        else:
            current = int(image_number)
        if self._last_seq < 0:
            self._offset = -current
        elif current <= self._last_number:
            self._offset = self._last_seq + self._capacity + 1 - current
            logger.warning(
                "%s: ImageNumber restarted at %d after %d (an MMCore before 12.5 clearing its full buffer); "
                "at least %d images lost: the gap is a lower bound",
                self._name,
                current,
                self._last_number,
                self._capacity + current,
            )
        seq = current + self._offset
        if self._last_seq >= 0 and seq > self._last_seq + 1:
            missing = seq - self._last_seq - 1
            self.lost += missing
            self.gaps += 1
            logger.warning(
                "%s: %d images lost in MMCore's circular buffer before frame %d "
                "(the consumer fell behind; the buffer holds %d images)",
                self._name,
                missing,
                seq,
                self._capacity,
            )
        self._last_number, self._last_seq = current, seq
        return seq


def frame_time(tags: dict[str, Any], started: float, popped_at: float) -> float | None:
    """The image's ``TimeReceivedByCore`` as Unix epoch seconds, or None when absent or implausible.

    The tag is the host's local wall-clock time ("YYYY-MM-DD hh:mm:ss.uuuuuu")
    when the image entered the circular buffer. Plausible: between 1 s before
    the acquisition ``started`` and 1 s after the image was ``popped_at``
    (both epoch seconds).
    """
    value = tags.get(TAG_TIME_IN_CORE)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        epoch = datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None
    return epoch if started - 1.0 <= epoch <= popped_at + 1.0 else None


@dataclass(frozen=True)
class FrameDefaults:
    """The camera's state when the acquisition started: metadata for images whose tags lack it."""

    camera: str
    exposure_ms: float
    binning: int
    roi_px: tuple[int, int, int, int]


def frame_metadata(image_number: int, tags: dict[str, Any], defaults: FrameDefaults) -> dict[str, Any]:
    """``Frame.metadata``: image number, elapsed ms (when tagged), exposure ms, camera, ROI [x, y, w, h], binning."""
    metadata: dict[str, Any] = {"image_number": int(image_number)}
    elapsed = number(tags.get(_TAG_ELAPSED))
    if elapsed is not None:
        metadata["elapsed_ms"] = elapsed
    exposure = number(tags.get(_TAG_EXPOSURE))
    metadata["exposure_ms"] = exposure if exposure is not None else defaults.exposure_ms
    metadata["camera"] = str(tags.get(_TAG_CAMERA) or defaults.camera)
    x, y = number(tags.get(_TAG_ROI_X)), number(tags.get(_TAG_ROI_Y))
    roi = list(defaults.roi_px)
    if x is not None and y is not None:
        roi[:2] = [int(x), int(y)]
    metadata["roi_px"] = roi
    binning = number(tags.get(_TAG_BINNING))
    metadata["binning"] = int(binning) if binning is not None else defaults.binning
    return metadata
