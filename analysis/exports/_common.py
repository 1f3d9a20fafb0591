"""What every export needs: blocks of a finished or still-growing result file, atomic output files, geometry."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plstream.analysis.result_file import ResultFollower, Results

__all__ = ["ExportError", "Progress", "ResultBlocks", "aperture_radius_px", "atomic_output", "psf_sigma_px"]


class ExportError(ValueError):
    """An export that cannot be made from what it was given (the message says what is missing)."""


Progress = Callable[[int, int], None]
"""``progress(done, total)``: called as an export goes (frames, spots or figures)."""

BLOCK_FRAMES = 256


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix), renamed to ``path`` when the block ends without error."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist; create it first")
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass
class ResultBlocks:
    """A result file read in blocks of frames, finished or still being written (what was committed when opened).

    Attributes
    ----------
    head : Results
        Frames 0 .. 0 (none) with the spot table, the mean image, the attributes and the blinking tables.
    n_frames, n_spots : int
        The committed frames and spots when the file was opened.
    """

    path: Path
    head: Results
    n_frames: int
    n_spots: int
    _follower: ResultFollower

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ResultBlocks:
        follower = ResultFollower(path)
        head = follower.read(0, 0)
        return cls(Path(path), head, follower.n_frames, follower.n_spots, follower)

    def __enter__(self) -> ResultBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._follower.close()

    def read(self, start: int = 0, stop: int | None = None) -> Results:
        """Frames ``start .. stop-1`` (all committed ones by default)."""
        return self._follower.read(start, self.n_frames if stop is None else min(stop, self.n_frames))

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[Results]:
        """Consecutive blocks of at most ``block_frames`` frames."""
        for start in range(0, self.n_frames, block_frames):
            yield self.read(start, start + block_frames)

    @property
    def running(self) -> bool:
        return self.head.status == "running"


def psf_sigma_px(results: Results) -> float:
    """The PSF width of the run, px: measured (summary), set (settings), or the initial guess."""
    summary = results.summary.get("psf_sigma_px")
    if isinstance(summary, (int, float)) and summary > 0:
        return float(summary)
    psf = results.settings.get("psf", {})
    for key in ("sigma_px", "initial_sigma_px"):
        value = psf.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 1.5


def aperture_radius_px(results: Results) -> float:
    """The photometry aperture radius of the run, px (``integration.aperture_radius_px`` or 2.5 PSF sigma)."""
    value = results.settings.get("integration", {}).get("aperture_radius_px")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return 2.5 * psf_sigma_px(results)


def frame_times(results: Results, first_timestamp: float | None = None) -> np.ndarray:
    """Time of each frame in the block since the run's first frame, s (the timestamps, else seq x interval)."""
    ts = np.asarray(results.timestamp, dtype=np.float64)
    if len(ts) and np.all(np.isfinite(ts)) and first_timestamp is not None and math.isfinite(first_timestamp):
        return ts - first_timestamp
    interval = results.frame_interval_s or 1.0
    return np.asarray(results.seq, dtype=np.float64) * interval


def first_timestamp(blocks: ResultBlocks) -> float | None:
    if blocks.n_frames == 0:
        return None
    first = blocks.read(0, 1).timestamp
    return float(first[0]) if len(first) and np.isfinite(first[0]) else None


def spot_label(i: int) -> str:
    return f"spot_{i}"


def run_units(results: Results) -> dict[str, Any]:
    return {"frame_interval_s": results.frame_interval_s, "pixel_size_um": results.pixel_size_um}
