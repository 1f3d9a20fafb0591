"""Frames moved back into the reference frame, and how still the particles are afterwards.

:func:`align_frame` undoes a frame's rigid drift (the result file's
``/drift``): pixel p of the aligned frame is the original frame at
``R(theta) (p - c) + c + d``, by bilinear interpolation (OpenCV
``warpAffine``), in the frame's own pixel type. :func:`measure_particles`
fits the same particles (Gaussian, Poisson MLE in the run's working units) in
frames, the way the analysis does, and :func:`residual_motion` sums up how
far each moved from its first position: before alignment that is the drift
it saw, after alignment what the drift correction left.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from plstream.analysis.fit import default_roi_size, fit_spots
from plstream.analysis.signal import SignalModel

__all__ = ["ParticleMotion", "align_frame", "measure_particles", "reference_to_frame", "residual_motion"]

_CV_TYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def reference_to_frame(drift_xy: np.ndarray, theta: float, center_xy: tuple[float, float]) -> np.ndarray:
    """(2, 3) affine matrix taking a reference (frame-0) point to where frame t shows it."""
    c, s = math.cos(theta), math.sin(theta)
    cx, cy = center_xy
    return np.array(
        [
            [c, -s, cx - (c * cx - s * cy) + float(drift_xy[0])],
            [s, c, cy - (s * cx + c * cy) + float(drift_xy[1])],
        ]
    )


def align_frame(frame: np.ndarray, drift_xy: np.ndarray, theta: float, center_xy: tuple[float, float]) -> np.ndarray:
    """Frame t moved back into frame 0's coordinates by the inverse of its rigid drift.

    Parameters
    ----------
    frame : (H, W) array
        The frame as recorded (any numeric type; 8- and 16-bit, int16 and floats are kept as they are).
    drift_xy, theta, center_xy
        Its drift: ``/drift/xy[t]``, ``/drift/rotation[t]`` and the rotation centre.

    Returns
    -------
    (H, W) array of ``frame``'s type
        Bilinear interpolation; pixels that came from outside the frame repeat the nearest edge pixel.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"a frame to align must be 2-D, got shape {frame.shape}")
    if not np.isfinite(np.asarray(drift_xy, dtype=np.float64)).all() or not math.isfinite(theta):
        return frame.copy()
    source = frame if frame.dtype.type in _CV_TYPES else frame.astype(np.float64)
    matrix = reference_to_frame(drift_xy, theta, center_xy)
    height, width = frame.shape
    aligned = cv2.warpAffine(
        source,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if aligned.dtype != frame.dtype:
        if np.issubdtype(frame.dtype, np.integer):
            info = np.iinfo(frame.dtype)
            aligned = np.clip(np.rint(aligned), info.min, info.max)
        aligned = aligned.astype(frame.dtype)
    return aligned


def measure_particles(
    frames: Iterable[np.ndarray],
    centers_xy: Iterable[np.ndarray],
    signal: SignalModel,
    *,
    sigma_px: float,
    max_iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit K particles in each frame.

    Parameters
    ----------
    frames : iterable of (H, W) arrays
        Raw frames (ADU).
    centers_xy : iterable of (K, 2) arrays
        Where to look for the particles in each frame, px.
    signal : SignalModel
        The run's signal model (raw ADU to the working units the fits assume).
    sigma_px : float
        The PSF (particle) width the fits start from, px.

    Returns
    -------
    xy : (T, K, 2) float64
        Fitted centres, px (NaN where the fit failed).
    uncertainty : (T, K) float64
        Their CRLB standard errors, px.
    """
    roi = default_roi_size(sigma_px)
    positions, errors = [], []
    for frame, centers in zip(frames, centers_xy):
        fits = fit_spots(
            signal.to_working(frame),
            np.asarray(centers, dtype=np.float64).reshape(-1, 2),
            sigma_init=sigma_px,
            roi_size=roi,
            read_variance=signal.read_variance,
            max_iterations=max_iterations,
        )
        xy = np.column_stack([fits.x, fits.y])
        xy[~fits.success] = np.nan
        positions.append(xy)
        errors.append(np.where(fits.success, fits.uncertainty, np.nan))
    if not positions:
        return np.zeros((0, 0, 2)), np.zeros((0, 0))
    return np.stack(positions), np.stack(errors)


@dataclass(frozen=True)
class ParticleMotion:
    """How far particles moved from their position in the first frame they were measured in.

    Attributes
    ----------
    displacement : (T, K, 2) float64
        Position minus the first measured position, px (NaN where not measured).
    magnitude : (T, K) float64
        Its length, px.
    max_px, rms_px : (K,) float64
        Largest and root-mean-square magnitude over the frames, px.
    measured : (K,) int64
        Frames in which each particle was measured.
    """

    displacement: np.ndarray
    magnitude: np.ndarray
    max_px: np.ndarray
    rms_px: np.ndarray
    measured: np.ndarray


def residual_motion(xy: np.ndarray) -> ParticleMotion:
    """:class:`ParticleMotion` of positions ``xy`` (T, K, 2) (as :func:`measure_particles` gives)."""
    xy = np.asarray(xy, dtype=np.float64)
    _t, k = xy.shape[:2]
    first = np.full((k, 2), np.nan)
    for j in range(k):
        good = np.flatnonzero(np.isfinite(xy[:, j]).all(axis=1))
        if good.size:
            first[j] = xy[good[0], j]
    displacement = xy - first[None]
    magnitude = np.hypot(displacement[..., 0], displacement[..., 1])
    measured = np.isfinite(magnitude).sum(axis=0)
    with np.errstate(invalid="ignore"):
        peak = np.where(measured > 0, np.nanmax(np.where(np.isfinite(magnitude), magnitude, -np.inf), axis=0), np.nan)
        rms = np.sqrt(np.nansum(magnitude**2, axis=0) / np.maximum(measured, 1))
    rms = np.where(measured > 0, rms, np.nan)
    return ParticleMotion(displacement, magnitude, peak, rms, measured.astype(np.int64))
