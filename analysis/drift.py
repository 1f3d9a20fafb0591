"""Per-frame stage drift: from the fitted spots, with a cross-correlation fallback.

Convention (public): ``drift = [dx, dy]`` is where a reference-frame (frame 0)
point appears in the current frame minus its reference position; x = column,
y = row, pixel centres at integers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from skimage.registration import phase_cross_correlation

from plstream.analysis.kernels.drift import robust_mean_displacement

__all__ = ["DriftEstimate", "drift_by_correlation", "drift_from_spots"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftEstimate:
    """A drift measurement for one frame.

    Attributes
    ----------
    dx, dy : float
        Drift in px (NaN when it could not be measured).
    standard_error : float
        Standard error of each component, px (inf when unknown).
    n_spots : int
        Spots used (0 for the correlation method).
    method : str
        ``"spots"``, ``"correlation"``, ``"reference"`` (frame 0) or ``"carried"``.
    """

    dx: float
    dy: float
    standard_error: float
    n_spots: int
    method: str

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.dx, self.dy])


def drift_from_spots(
    displacements: np.ndarray,
    variances: np.ndarray,
    usable: np.ndarray,
    *,
    clip_sigma: float = 5.0,
    clip_floor_px: float = 0.25,
    inliers_out: np.ndarray | None = None,
) -> DriftEstimate:
    """Robust inverse-variance weighted mean of spot displacements.

    Parameters
    ----------
    displacements : (S, 2) array
        Fitted position in this frame minus the spot's reference position, px.
    variances : (S,) array
        Variance of each displacement per axis (fit CRLB + reference uncertainty), px^2.
    usable : (S,) bool array
        Spots with a successful fit and a known reference position.
    clip_sigma, clip_floor_px : float
        Outlier rejection around the weighted median: a spot farther than
        ``max(clip_sigma * sigma_i, clip_floor_px)`` is left out.
    inliers_out : (S,) bool array, optional
        Receives the spots that were used.

    Returns
    -------
    DriftEstimate
        ``method="spots"``; NaN drift and ``n_spots=0`` when no spot was usable.
    """
    displacements = np.ascontiguousarray(displacements, dtype=np.float64).reshape(-1, 2)
    n = displacements.shape[0]
    variances = np.ascontiguousarray(variances, dtype=np.float64)
    usable = np.ascontiguousarray(usable, dtype=np.bool_)
    if variances.shape != (n,) or usable.shape != (n,):
        raise ValueError("displacements (S, 2), variances (S,) and usable (S,) must describe the same S spots")
    if inliers_out is None:
        inliers_out = np.empty(n, dtype=np.bool_)
    dx, dy, stderr, used = robust_mean_displacement(
        displacements, variances, usable, clip_sigma, clip_floor_px, inliers_out
    )
    return DriftEstimate(float(dx), float(dy), float(stderr), int(used), "spots")


def drift_by_correlation(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample: int = 50,
) -> DriftEstimate:
    """Drift of ``moving`` relative to ``reference`` by upsampled cross-correlation.

    Uses plain (not phase-whitened) cross-correlation, which is several times more
    accurate than phase correlation on sparse, photon-limited spot images
    (see shared notes, algorithms section 3.1).

    Parameters
    ----------
    reference : (H, W) array
        The drift-corrected mean image in reference-frame coordinates (photons).
    moving : (H, W) array
        The current frame (photons).
    upsample : int
        Sub-pixel resolution, 1/px.

    Returns
    -------
    DriftEstimate
        ``method="correlation"``.
    """
    if reference.shape != moving.shape:
        raise ValueError(f"reference {reference.shape} and frame {moving.shape} must have the same shape")
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    shift, _, _ = phase_cross_correlation(
        ref - np.median(ref), mov - np.median(mov), upsample_factor=upsample, normalization=None
    )
    # ``shift`` registers moving onto reference, i.e. it undoes the drift.
    return DriftEstimate(float(-shift[1]), float(-shift[0]), 1.0 / upsample, 0, "correlation")
