"""Make the analysis ready for a stream before its first frame arrives.

A live camera cannot wait: if its first frames arrived while numba compiles
(tens of seconds on a fresh install; kernels are cached on disk afterwards),
they would queue up and then be dropped. numba compiles a kernel the first
time it sees an argument type (the stream's pixel type) and some kernels run
only on larger images (detection in bands of rows) or later in a run (the
periodic re-detection after frame 32). :func:`warm_up` therefore runs the
whole per-frame analysis on synthetic frames of the stream's own shape and
pixel type, long enough to pass every stage of the detection schedule, so
every kernel a real run will call is compiled or loaded before the source is
told to start.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy.special import erf

from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.camera import CameraModel
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.result_file.layout import rotation_center_xy
from plstream.config import Settings

__all__ = ["compile_kernels", "warm_up"]

logger = logging.getLogger(__name__)

_SIGMA_PX = 1.3
_SPOT_SPACING_PX = 24
_MAX_SPOTS = 64
_NO_SPOT_FRAMES = (38, 39, 40)  # frames without spots: the drift falls back to image correlation


def _frames_to_cover(settings: Settings) -> int:
    """Frames that reach every detection stage: 0, 1, 2, 4, ..., 32, then two periodic passes."""
    return 33 + 2 * settings.detection.every_frames + 1


def _synthetic_frame(
    shape: tuple[int, int], dtype: np.dtype, rng: np.random.Generator, *, spots: bool = True
) -> np.ndarray:
    """Bright Gaussian spots (or none) on a flat background with Poisson noise, in ``dtype`` (values kept in range)."""
    rows, cols = shape
    image = np.full(shape, 10.0)
    margin = 8
    ys = np.arange(margin, rows - margin, _SPOT_SPACING_PX)
    xs = np.arange(margin, cols - margin, _SPOT_SPACING_PX)
    centres = [(x + 0.3, y + 0.6) for y in ys for x in xs][:_MAX_SPOTS] if spots else []
    r_edges, c_edges = np.arange(rows + 1) - 0.5, np.arange(cols + 1) - 0.5
    scale = np.sqrt(2) * _SIGMA_PX
    for x, y in centres:
        r0, r1 = max(0, int(y) - 6), min(rows, int(y) + 7)
        c0, c1 = max(0, int(x) - 6), min(cols, int(x) + 7)
        ey = np.diff(0.5 * erf((r_edges[r0 : r1 + 1] - y) / scale))
        ex = np.diff(0.5 * erf((c_edges[c0 : c1 + 1] - x) / scale))
        image[r0:r1, c0:c1] += 1500.0 * np.outer(ey, ex)
    counts = rng.poisson(image).astype(np.float64) + 100.0
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        counts *= min(1.0, 0.5 * info.max / max(float(counts.max()), 1.0))  # 8-bit cameras: stay in range
        return np.clip(np.rint(counts), info.min, info.max).astype(dtype)
    return counts.astype(dtype)


def warm_up(settings: Settings, shape: tuple[int, int], dtype: str | np.dtype) -> float:
    """Run the analysis on synthetic frames of ``shape`` and ``dtype``; returns the seconds it took.

    Parameters
    ----------
    settings : Settings
        The run's settings (``fit.parallel`` decides which kernel variants are used).
    shape : (int, int)
        Frame shape of the stream, (rows, columns) px.
    dtype : str or numpy.dtype
        Pixel type of the stream.

    Notes
    -----
    Costs about the analysis of ~55 frames once the kernels are cached
    (0.1-1 s from 256x256 to 2048x2048 px on 2 cores); the first run after
    an install also compiles (1-2 minutes).
    """
    started = time.monotonic()
    pixel_type = np.dtype(dtype)
    rng = np.random.default_rng(0)
    with_spots = _synthetic_frame(shape, pixel_type, rng)
    without_spots = _synthetic_frame(shape, pixel_type, rng, spots=False)
    camera = CameraModel(offset_adu=100.0, gain_adu_per_e=1.0, read_noise_e=1.0, origin={})
    analyzer = StreamingAnalyzer(settings, shape, camera)
    for t in range(_frames_to_cover(settings)):
        frame = without_spots if t in _NO_SPOT_FRAMES else with_spots
        analyzer.process(t, float(t), frame)
    analyzer.finish()
    analyzer.running_mean()
    _warm_up_moves(settings, shape, with_spots)
    elapsed = time.monotonic() - started
    logger.debug("analysis warmed up for %s %s frames in %.1f s", "x".join(map(str, shape)), pixel_type, elapsed)
    return elapsed


def _warm_up_moves(settings: Settings, shape: tuple[int, int], frame: np.ndarray) -> None:
    """The running mean's kernels for frames that rotate or move after they were added (a drifting stage)."""
    mean = RunningMean(shape)
    photons = np.empty(shape, dtype=np.float32)
    centre = rotation_center_xy(shape)
    parallel = settings.fit.parallel
    mean.add_raw(frame, 100.0, 1.0, np.zeros(2), photons, parallel=parallel, rotation=0.01, center_xy=centre)
    mean.move_last(frame, photons, np.array([1.0, 0.0]), rotation=0.0, center_xy=centre)
    mean.move_last(frame, photons, np.zeros(2), rotation=0.01, center_xy=centre)
    mean.mean_without_last(photons)


def compile_kernels(settings: Settings | None = None) -> None:
    """Compile every analysis kernel on a small uint16 movie (e.g. after installing, to fill numba's cache)."""
    warm_up(settings or Settings(), (300, 300), np.dtype(np.uint16))
