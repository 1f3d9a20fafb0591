"""``plstream export video``: the movie as an annotated MP4 (circles and IDs at the drift-corrected positions).

Streams: one movie frame and one block of result rows in memory at a time.
Each spot is circled where the analysis measured it in that frame (its
reference position plus the frame's drift), coloured by its refined state
(ON orange, OFF blue, GRAY grey), with its ID; each frame is stamped with its
number and time. Written with OpenCV (codec ``mp4v``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from plstream.acquire_adapters.files.open_movie import open_movie
from plstream.analysis.exports._common import ExportError, Progress, ResultBlocks, aperture_radius_px, atomic_output

__all__ = ["export_video"]

_BGR = {0: (182, 111, 59), 1: (26, 123, 224), 2: (140, 140, 140), -1: (0, 200, 255)}
_SHIFT = 4  # OpenCV draws at 1/16 px


def _levels(frames: list[np.ndarray]) -> tuple[float, float]:
    stack = np.stack([f.astype(np.float32) for f in frames])
    low, high = np.percentile(stack, [0.5, 99.9])
    return float(low), float(max(high, low + 1.0))


def export_video(
    result: str | os.PathLike[str],
    movie: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fps: float | None = None,
    scale: int | None = None,
    labels: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Write the annotated movie.

    Parameters
    ----------
    result : path
        The result file (finished or still being written: frames not yet
        analyzed are shown without circles).
    movie : path
        The movie the result was made from (TIFF stack, TIFF folder, video, plstream recording).
    out : path
        The ``.mp4`` to write.
    fps : float, optional
        Frames per second of the video (default: the run's frame rate, at most 30).
    scale : int, optional
        Whole-number magnification (default: 2 for frames under 512 px, else 1).
    progress : callable(done, total), optional
    """
    out = Path(out)
    with ResultBlocks.open(result) as blocks:
        head = blocks.head
        spots = np.column_stack([head.spots_x, head.spots_y])
        first = np.asarray(head.spots_first_frame)
        radius = aperture_radius_px(head)
        interval = head.frame_interval_s
        source = open_movie(movie)
        try:
            total = int(source.describe().get("n_frames") or 0) or None
            frames = iter(source)
            lead = []
            for frame in frames:
                lead.append(frame)
                if len(lead) >= 10:
                    break
            if not lead:
                raise ExportError(f"the movie {movie} has no frames")
            low, high = _levels([f.data for f in lead])
            height, width = lead[0].data.shape[:2]
            k = scale or (2 if max(height, width) < 512 else 1)
            rate = fps or (min(30.0, 1.0 / interval) if interval else 25.0)
            with atomic_output(out) as partial:
                writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), rate, (width * k, height * k))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write an MP4 video to {out} (codec mp4v)")
                try:
                    rows = _Rows(blocks)
                    done = 0
                    for frame in _chain(lead, frames):
                        row = rows.find(frame.seq)
                        image = _draw(frame, row, spots, first, radius, low, high, k, interval, labels)
                        writer.write(image)
                        done += 1
                        if progress is not None:
                            progress(done, total or done)
                finally:
                    writer.release()
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    return out


def _chain(lead, rest):
    yield from lead
    yield from rest


class _Rows:
    """Result rows looked up by sequence number, one block of rows in memory."""

    def __init__(self, blocks: ResultBlocks) -> None:
        self._blocks = blocks
        self._start = 0
        self._block = blocks.read(0, 256) if blocks.n_frames else None

    def find(self, seq: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """``(row index, drift (2,), refined states (S,))`` of the frame ``seq``, or None when it was not analyzed."""
        while self._block is not None:
            seqs = np.asarray(self._block.seq)
            if len(seqs) and seq > seqs[-1]:
                self._start += len(seqs)
                self._block = (
                    self._blocks.read(self._start, self._start + 256) if self._start < self._blocks.n_frames else None
                )
                continue
            hit = np.flatnonzero(seqs == seq)
            if len(hit) == 0:
                return None
            r = int(hit[0])
            return self._start + r, np.asarray(self._block.drift_xy[r]), np.asarray(self._block.segmented[r])
        return None


def _draw(frame, row, spots, first, radius, low, high, k, interval, labels):
    data = np.asarray(frame.data, dtype=np.float32)
    if data.ndim == 3:
        data = data.mean(axis=2)
    grey = np.clip((data - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    if k > 1:
        grey = cv2.resize(grey, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if row is not None:
        t, drift, states = row
        r = int(round(radius * k * (1 << _SHIFT)))
        for i, (x, y) in enumerate(spots):
            if not (math.isfinite(x) and math.isfinite(y)) or first[i] < 0 or first[i] > t:
                continue
            cx = (x + drift[0] + 0.5) * k - 0.5  # pixel centres at integers, scaled
            cy = (y + drift[1] + 0.5) * k - 0.5
            state = int(states[i]) if i < len(states) else -1
            colour = _BGR.get(state, _BGR[-1])
            centre = (int(round(cx * (1 << _SHIFT))), int(round(cy * (1 << _SHIFT))))
            cv2.circle(image, centre, r, colour, 1, cv2.LINE_AA, _SHIFT)
            if labels:
                cv2.putText(
                    image,
                    str(i),
                    (int(cx + radius * k + 1), int(cy - radius * k)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.3 * k,
                    colour,
                    1,
                    cv2.LINE_AA,
                )
    stamp = f"frame {frame.seq}"
    if interval:
        stamp += f"  t = {frame.seq * interval:.2f} s"
    if row is None:
        stamp += "  (not analyzed)"
    cv2.putText(image, stamp, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return image
