"""Per-frame stage drift: a rigid transform (translation + rotation), from the spots or by image registration.

Convention (public, the result file's ``/drift``): a reference-frame (frame 0)
point p appears in frame t at ``R(theta) (p - c) + c + d`` with ``d = [dx, dy]``,
``R(theta) = [[cos, -sin], [sin, cos]]`` acting on (x, y), and c the rotation
centre (the image centre); x = column, y = row, pixel centres at integers.
With ``theta = 0``, d is where a reference point appears minus its reference
position.

Two ways to measure it:

- :func:`rigid_from_spots`: a weighted least-squares (Procrustes) fit of the
  spots' fitted positions to their reference positions, weights from the
  fits' CRLB, outliers clipped, with standard errors;
- :func:`register_frame`: image registration of the frame against the
  drift-corrected mean of the earlier frames: both are band-passed (a
  difference of Gaussians removes the smooth illumination, which does not move
  with the sample, and the pixel-level noise and fixed pattern), the
  translation is found by upsampled cross-correlation (not phase-whitened:
  several times more accurate on sparse spots, shared notes section 3.1),
  checked for significance against the correlation at far-away shifts, and
  the rotation is refined iteratively (OpenCV's ECC, Euclidean motion).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from skimage.registration import phase_cross_correlation

from plstream.analysis.kernels.drift import robust_mean_displacement, robust_rigid

__all__ = [
    "DriftEstimate",
    "RotationSmoother",
    "drift_by_correlation",
    "drift_from_spots",
    "register_frame",
    "rigid_from_spots",
]

logger = logging.getLogger(__name__)

_NULL_SHIFTS_PX = ((17, 0), (0, 17), (-17, 0), (0, -17), (23, 23), (-23, 23), (23, -23), (-23, -23))
_MIN_REGISTRATION_Z = 8.0  # the correlation peak must stand this far above the far-shift correlations
_ECC_ITERATIONS = 100
_ECC_EPS = 1e-6
_ECC_MAX_DISAGREEMENT_PX = 2.0


@dataclass(frozen=True)
class DriftEstimate:
    """A drift measurement for one frame.

    Attributes
    ----------
    dx, dy : float
        Drift in px (NaN when it could not be measured): the translation about the rotation centre.
    standard_error : float
        Standard error of each component, px (inf when unknown).
    n_spots : int
        Spots used (0 for registration).
    method : str
        ``"spots"``, ``"registration"`` (``"correlation"`` from :func:`drift_by_correlation`),
        ``"reference"`` (frame 0) or ``"kept"`` (not measured: the previous drift is kept).
    theta : float
        Rotation about the centre, rad.
    se_x, se_y, se_theta : float
        Standard errors of dx, dy (px) and theta (rad); inf when unknown.
    rotation_fitted : bool
        The rotation was measured (else it was kept from the prediction).
    significance : float
        Registration: how far the correlation peak stands out (z); spots: NaN.
    chi2 : float
        Spots: the reduced chi-square of the rigid fit (1 when the residuals match the CRLB).
    """

    dx: float
    dy: float
    standard_error: float
    n_spots: int
    method: str
    theta: float = 0.0
    se_x: float = math.inf
    se_y: float = math.inf
    se_theta: float = math.inf
    rotation_fitted: bool = False
    significance: float = math.nan
    chi2: float = math.nan

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.dx, self.dy])

    @property
    def uncertainty(self) -> np.ndarray:
        """[se_dx, se_dy, se_theta] (px, px, rad)."""
        return np.array([self.se_x, self.se_y, self.se_theta])


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


def rigid_from_spots(
    ref_xy: np.ndarray,
    displacements: np.ndarray,
    variances: np.ndarray,
    usable: np.ndarray,
    *,
    center_xy: tuple[float, float],
    predicted: tuple[float, float, float] = (0.0, 0.0, 0.0),
    fit_rotation: bool = True,
    field_radius_px: float = 0.0,
    rotation_gate_px: float = 0.1,
    clip_sigma: float = 5.0,
    clip_floor_px: float = 0.25,
    inliers_out: np.ndarray | None = None,
) -> DriftEstimate:
    """Rigid transform (translation + rotation about ``center_xy``) of the spots, robust and weighted.

    Parameters
    ----------
    ref_xy : (S, 2) array
        Reference (frame-0) positions, px.
    displacements : (S, 2) array
        Fitted position in this frame minus the reference position, px.
    variances : (S,) array
        Variance of each fitted position per axis (CRLB + reference), px².
    usable : (S,) bool array
        Spots that may take part.
    center_xy : (float, float)
        Rotation centre c, px.
    predicted : (dx, dy, theta)
        The predicted transform (outliers are first judged against it; theta
        is kept when the rotation is not fitted).
    fit_rotation : bool
        Measure the rotation (else only the translation).
    field_radius_px, rotation_gate_px : float
        The rotation is measured only if its standard error moves a point at
        ``field_radius_px`` from the centre by at most ``rotation_gate_px``.
    clip_sigma, clip_floor_px : float
        Outlier rejection: a residual beyond ``max(clip_sigma * sigma_i, clip_floor_px)``.
    inliers_out : (S,) bool array, optional
        Receives the spots used.

    Returns
    -------
    DriftEstimate
        ``method="spots"``; NaN and ``n_spots=0`` when no spot was usable.
    """
    ref = np.ascontiguousarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    n = ref.shape[0]
    disp = np.ascontiguousarray(displacements, dtype=np.float64).reshape(-1, 2)
    var = np.ascontiguousarray(variances, dtype=np.float64)
    use = np.ascontiguousarray(usable, dtype=np.bool_)
    if disp.shape != (n, 2) or var.shape != (n,) or use.shape != (n,):
        raise ValueError("ref_xy, displacements (S, 2), variances and usable (S,) must describe the same S spots")
    if inliers_out is None:
        inliers_out = np.empty(n, dtype=np.bool_)
    out = np.empty(9)
    robust_rigid(
        ref,
        disp,
        var,
        use,
        float(center_xy[0]),
        float(center_xy[1]),
        float(predicted[2]),
        float(predicted[0]),
        float(predicted[1]),
        bool(fit_rotation),
        float(field_radius_px),
        float(rotation_gate_px),
        float(clip_sigma),
        float(clip_floor_px),
        inliers_out,
        out,
    )
    used = int(out[6])
    return DriftEstimate(
        dx=float(out[0]),
        dy=float(out[1]),
        standard_error=float(max(out[3], out[4])) if used else math.inf,
        n_spots=used,
        method="spots",
        theta=float(out[2]) if used else float(predicted[2]),
        se_x=float(out[3]) if used else math.inf,
        se_y=float(out[4]) if used else math.inf,
        se_theta=float(out[5]) if used else math.inf,
        rotation_fitted=bool(out[7] > 0),
        chi2=float(out[8]),
    )


def _band_pass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Difference of Gaussians: keeps structure from about the particle size to ~4x it (float32)."""
    fine = max(1.0, 0.7 * sigma_px)
    coarse = max(8.0, 4.0 * sigma_px)
    img = np.ascontiguousarray(image, dtype=np.float32)
    return cv2.GaussianBlur(img, (0, 0), fine) - cv2.GaussianBlur(img, (0, 0), coarse)


def _correlation_at(reference: np.ndarray, moving: np.ndarray, shift_yx: tuple[int, int]) -> float:
    """Normalised correlation of ``reference`` with ``moving`` moved by an integer ``shift_yx`` (overlap only)."""
    dy, dx = shift_yx
    h, w = reference.shape
    r0, r1 = max(0, dy), min(h, h + dy)
    c0, c1 = max(0, dx), min(w, w + dx)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return math.nan
    a = reference[r0:r1, c0:c1].astype(np.float64)
    b = moving[r0 - dy : r1 - dy, c0 - dx : c1 - dx].astype(np.float64)
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


def register_frame(
    reference: np.ndarray,
    frame: np.ndarray,
    *,
    center_xy: tuple[float, float],
    predicted: tuple[float, float, float] = (0.0, 0.0, 0.0),
    sigma_px: float = 1.5,
    upsample: int = 50,
    fit_rotation: bool = True,
) -> DriftEstimate:
    """Drift of ``frame`` relative to ``reference`` by image registration (see the module notes).

    Parameters
    ----------
    reference : (H, W) array
        The drift-corrected mean of the earlier frames, reference coordinates.
    frame : (H, W) array
        The current frame (same units).
    center_xy : (float, float)
        Rotation centre, px.
    predicted : (dx, dy, theta)
        The predicted transform: the rotation starts from it (and is kept
        when it cannot be refined).
    sigma_px : float
        Particle (PSF) width, px: sets the band-pass.
    upsample : int
        Sub-pixel resolution of the translation, 1/px.
    fit_rotation : bool
        Refine the rotation too.

    Returns
    -------
    DriftEstimate
        ``method="registration"``; ``significance`` says how far the
        correlation peak stands out from the correlation at far-away shifts
        (below 8 the frame has no structure to register: the estimate is
        returned with NaN drift).
    """
    if reference.shape != frame.shape:
        raise ValueError(f"reference {reference.shape} and frame {frame.shape} must have the same shape")
    ref = _band_pass(reference, sigma_px)
    mov = _band_pass(frame, sigma_px)
    shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=int(upsample), normalization=None)
    dy0, dx0 = float(-shift[0]), float(-shift[1])  # ``shift`` registers the frame onto the reference
    iy, ix = int(round(dy0)), int(round(dx0))
    peak = _correlation_at(ref, mov, (-iy, -ix))
    null = np.array([_correlation_at(ref, mov, (-iy + sy, -ix + sx)) for sy, sx in _NULL_SHIFTS_PX])
    null = null[np.isfinite(null)]
    spread = float(np.std(null)) if null.size >= 3 else math.nan
    z = (peak - float(np.mean(null))) / spread if spread > 0 else math.nan
    if not (math.isfinite(z) and z >= _MIN_REGISTRATION_Z):
        return DriftEstimate(math.nan, math.nan, math.inf, 0, "registration", theta=predicted[2], significance=z)
    cx, cy = float(center_xy[0]), float(center_xy[1])
    theta = float(predicted[2])
    dx, dy = dx0, dy0
    rotation_fitted = False
    if fit_rotation:
        # ECC finds W with frame(W(p)) ~ reference(p); here W(p) = R p + (c - R c + d).
        c, s = math.cos(theta), math.sin(theta)
        warp = np.array(
            [[c, -s, cx - (c * cx - s * cy) + dx], [s, c, cy - (s * cx + c * cy) + dy]],
            dtype=np.float32,
        )
        try:
            ecc: Any = cv2.findTransformECC
            _, warp = ecc(
                ref,
                mov,
                warp,
                cv2.MOTION_EUCLIDEAN,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, _ECC_EPS),
                None,
                1,
            )
        except cv2.error as exc:
            logger.debug("ECC rotation refinement did not converge (%s); keeping the translation", exc)
        else:
            t = math.atan2(float(warp[1, 0]), float(warp[0, 0]))
            c, s = math.cos(t), math.sin(t)
            ex = float(warp[0, 2]) - cx + (c * cx - s * cy)
            ey = float(warp[1, 2]) - cy + (s * cx + c * cy)
            if math.hypot(ex - dx0, ey - dy0) <= _ECC_MAX_DISAGREEMENT_PX:
                theta, dx, dy, rotation_fitted = t, ex, ey, True
    se = 1.0 / upsample
    return DriftEstimate(
        dx,
        dy,
        se,
        0,
        "registration",
        theta=theta,
        se_x=se,
        se_y=se,
        se_theta=math.inf,
        rotation_fitted=rotation_fitted,
        significance=z,
    )


class RotationSmoother:
    """The rotation of each frame as the local linear trend of the last rotations measured.

    A stage rotates slowly; the rotation measured in one frame is noisy (its
    standard error times the distance from the centre moves the field's
    corners by ~0.01 px with 25 spots). Each new measurement joins a window
    of the last ``frames`` measurements, and the value reported is the
    weighted least-squares line through them at the current frame: causal (a
    stream has no future frames), without lag for a steady rotation, and
    about twice less noisy for ``frames = 10``. A measurement more than
    ``jump_sigma`` standard errors from the trend's prediction starts the
    window afresh (a sudden rotation is followed at once).

    Parameters
    ----------
    frames : int
        Window length; 1 reports each measurement as it is.
    jump_sigma : float
        Jump detection, in standard errors.
    """

    def __init__(self, frames: int = 10, jump_sigma: float = 4.0) -> None:
        self._frames = max(1, int(frames))
        self._jump = float(jump_sigma)
        self._t: list[float] = []
        self._theta: list[float] = []
        self._se: list[float] = []

    def _line(self, at: float) -> tuple[float, float]:
        """The weighted line through the window evaluated at ``at``: (value, standard error).

        Plain Python: the window is at most a few tens of numbers, fewer than numpy's overhead.
        """
        weights = [1.0 / (e * e) for e in self._se]
        total = sum(weights)
        tm = sum(w * t for w, t in zip(weights, self._t)) / total
        ym = sum(w * y for w, y in zip(weights, self._theta)) / total
        sxx = sum(w * (t - tm) ** 2 for w, t in zip(weights, self._t))
        if sxx <= 0.0:
            return ym, math.sqrt(1.0 / total)
        slope = sum(w * (t - tm) * (y - ym) for w, t, y in zip(weights, self._t, self._theta)) / sxx
        return ym + slope * (at - tm), math.sqrt(1.0 / total + (at - tm) ** 2 / sxx)

    def update(self, t: int, theta: float, se: float) -> tuple[float, float]:
        """Add the rotation measured in frame ``t`` (rad, standard error rad); returns the smoothed (value, se)."""
        if not (math.isfinite(theta) and math.isfinite(se) and se > 0):
            return theta, se
        if self._frames == 1:
            return theta, se
        if len(self._t) >= 2:
            predicted, predicted_se = self._line(float(t))
            if abs(theta - predicted) > self._jump * math.hypot(se, predicted_se):
                self.reset()
        self._t.append(float(t))
        self._theta.append(float(theta))
        self._se.append(float(se))
        if len(self._t) > self._frames:
            del self._t[0], self._theta[0], self._se[0]
        return self._line(float(t))

    def reset(self) -> None:
        """Forget the window (e.g. after a frame whose rotation could not be measured)."""
        self._t.clear()
        self._theta.clear()
        self._se.clear()
