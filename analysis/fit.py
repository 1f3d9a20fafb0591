"""Per-spot 2D Gaussian fitting: Poisson (sCMOS) maximum likelihood with Cramér-Rao bounds.

The model is a symmetric, pixel-integrated Gaussian on a flat background::

    mu[r, c] = N * dEx(c) * dEy(r) + b
    dE(u; m, s) = 1/2 [erf((u - m + 1/2) / (sqrt(2) s)) - erf((u - m - 1/2) / (sqrt(2) s))]

with x = column, y = row and pixel centres at integer coordinates. ``N`` is the
total photon count of the PSF (its integral), ``b`` the background in
photons/px. The image must be in photons (offset and gain removed). sCMOS read
noise enters as Huang et al. (2013): ``d + r2`` is Poisson with mean ``mu + r2``,
``r2`` being the read-noise variance in photons^2 (0 for pure Poisson).

The fit is Levenberg-Marquardt over all five parameters: Fisher scoring with a
log-likelihood check far from the optimum, exact Newton steps close to it (see
``_fit_kernels``). The CRLB is the diagonal of the inverse Fisher information
``sum dmu dmu^T / mu'`` at the fitted parameters, inverted in float64.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from plstream.analysis import _fit_kernels as _k

__all__ = [
    "PARAMETER_NAMES",
    "FitStatus",
    "SpotFits",
    "default_roi_size",
    "fit_spots",
    "fit_spots_into",
    "crlb_for",
]

logger = logging.getLogger(__name__)

Float64Array = NDArray[np.float64]
ParamsArray = NDArray[np.float64]  # (S, 5): x px, y px, N photons, sigma px, b photons/px

#: Column order of every (S, 5) parameter or CRLB array.
PARAMETER_NAMES = ("x", "y", "photons", "sigma", "background")
ROI_SIZE_MIN = 5
ROI_SIZE_MAX = 15

_NO_INITIAL = np.empty((0, _k.N_PARAMS))  # no warm start (empty, so never written)


class FitStatus(IntEnum):
    """Outcome of one spot fit (stored as int8)."""

    OK = _k.STATUS_OK
    NOT_CONVERGED = _k.STATUS_NOT_CONVERGED  # max_iterations reached
    OUT_OF_BOUNDS = _k.STATUS_OUT_OF_BOUNDS  # position ran into its bound, roi/2 px from its start
    NOT_FINITE = _k.STATUS_NOT_FINITE  # NaN/Inf pixel or centre, or a non-finite result
    ROI_OUTSIDE_IMAGE = _k.STATUS_ROI_OUTSIDE  # image smaller than the ROI, or centre > roi/2 outside it
    SINGULAR = _k.STATUS_SINGULAR  # Fisher matrix not invertible


@dataclass(frozen=True)
class SpotFits:
    """Fit results for S spots (arrays of length S, frame coordinates).

    Attributes
    ----------
    x, y : (S,) float64
        Position, px (x = column, y = row, pixel centres at integers).
    photons : (S,) float64
        Total photons of the PSF.
    sigma : (S,) float64
        Gaussian width, px.
    background : (S,) float64
        Background, photons/px.
    crlb : (S, 5) float64
        Cramér-Rao lower bound variances in the order ``PARAMETER_NAMES``
        (px^2, px^2, photons^2, px^2, (photons/px)^2); NaN when not computed.
    log_likelihood : (S,) float64
        Poisson log-likelihood ratio to the saturated model,
        ``sum d' ln(mu'/d') - (mu' - d')`` (<= 0; minus twice it is the deviance,
        about chi-square with ``roi_size**2 - 5`` degrees of freedom for a good fit).
    iterations : (S,) int32
        Levenberg-Marquardt steps solved.
    status : (S,) int8
        A ``FitStatus`` code; failed spots keep their last parameter values
        (NaN when the fit could not start).
    """

    x: Float64Array
    y: Float64Array
    photons: Float64Array
    sigma: Float64Array
    background: Float64Array
    crlb: Float64Array
    log_likelihood: Float64Array
    iterations: NDArray[np.int32]
    status: NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def success(self) -> NDArray[np.bool_]:
        """``status == FitStatus.OK``."""
        return self.status == FitStatus.OK

    @property
    def params(self) -> ParamsArray:
        """(S, 5) parameters in the order ``PARAMETER_NAMES`` (usable as a warm start)."""
        return np.column_stack([self.x, self.y, self.photons, self.sigma, self.background])

    @property
    def uncertainty(self) -> Float64Array:
        """Localization standard error, ``sqrt((crlb_x + crlb_y) / 2)``, px."""
        return np.sqrt(0.5 * (self.crlb[:, 0] + self.crlb[:, 1]))

    @property
    def photons_snr(self) -> Float64Array:
        """Photon count over its CRLB standard error, ``photons / sqrt(crlb_N)``."""
        return self.photons / np.sqrt(self.crlb[:, 2])


def default_roi_size(sigma_px: float) -> int:
    """Fitting ROI for a PSF width: ``2 * ceil(3 sigma) + 1`` px, clipped to 5..15."""
    return min(max(2 * math.ceil(3.0 * sigma_px) + 1, ROI_SIZE_MIN), ROI_SIZE_MAX)


def fit_spots(
    image: np.ndarray,
    centers_xy: np.ndarray,
    *,
    sigma_init: float,
    roi_size: int | None = None,
    read_variance: float = 0.0,
    max_iterations: int = 20,
    initial: np.ndarray | None = None,
    parallel: bool = False,
) -> SpotFits:
    """Fit a pixel-integrated Gaussian to each spot by Poisson (sCMOS) maximum likelihood.

    Parameters
    ----------
    image : (H, W) array
        One frame in photons (float32 or float64 avoid a copy; small negative
        values from read noise are fine). NaN/Inf pixels fail only the spots
        whose ROI contains them (status ``NOT_FINITE``).
    centers_xy : (S, 2) array
        Approximate spot centres ``(x, y)``, frame px. Each ROI is centred on
        the rounded centre and shifted to lie inside the image.
    sigma_init : float
        Starting PSF width, px.
    roi_size : int, optional
        Odd ROI side, 5..15 px; default ``default_roi_size(sigma_init)``.
    read_variance : float
        sCMOS read-noise variance, photons^2 (0: pure Poisson).
    max_iterations : int
        Levenberg-Marquardt steps before giving up (status ``NOT_CONVERGED``).
    initial : (S, 5) array, optional
        Warm start in the order ``PARAMETER_NAMES`` (frame px); NaN entries or
        rows fall back to the default start (border background, centroid,
        ``sigma_init``).
    parallel : bool
        Spread the spots over numba's threads (results are identical).

    Returns
    -------
    SpotFits

    Examples
    --------
    >>> image = np.full((32, 32), 10.0, dtype=np.float32)
    >>> fits = fit_spots(image, np.array([[16.0, 16.0]]), sigma_init=1.3)
    >>> fits.x.shape
    (1,)
    """
    centers = _as_centers(centers_xy)
    n = centers.shape[0]
    params = np.empty((n, _k.N_PARAMS))
    crlb = np.empty((n, _k.N_PARAMS))
    loglik = np.empty(n)
    iterations = np.empty(n, dtype=np.int32)
    status = np.empty(n, dtype=np.int8)
    fit_spots_into(
        image,
        centers,
        params,
        crlb,
        loglik,
        iterations,
        status,
        sigma_init=sigma_init,
        roi_size=roi_size,
        read_variance=read_variance,
        max_iterations=max_iterations,
        initial=initial,
        parallel=parallel,
    )
    return SpotFits(*params.T.copy(), crlb, loglik, iterations, status)


def fit_spots_into(
    image: np.ndarray,
    centers_xy: np.ndarray,
    params_out: ParamsArray,
    crlb_out: Float64Array,
    loglik_out: Float64Array,
    iters_out: NDArray[np.int32],
    status_out: NDArray[np.int8],
    *,
    sigma_init: float,
    roi_size: int | None = None,
    read_variance: float = 0.0,
    max_iterations: int = 20,
    initial: np.ndarray | None = None,
    parallel: bool = False,
) -> None:
    """``fit_spots`` into caller-allocated outputs (no allocation for float32/float64 inputs).

    Parameters
    ----------
    image, centers_xy, sigma_init, roi_size, read_variance, max_iterations, initial, parallel
        As in ``fit_spots``.
    params_out, crlb_out : (S, 5) float64, C-contiguous
        Written: parameters and CRLB variances in the order ``PARAMETER_NAMES``.
    loglik_out : (S,) float64
        Written: log-likelihood ratio (see ``SpotFits.log_likelihood``).
    iters_out : (S,) int32
        Written: iterations.
    status_out : (S,) int8
        Written: ``FitStatus`` codes.
    """
    image = _as_image(image)
    centers = _as_centers(centers_xy)
    n = centers.shape[0]
    sigma_init = _positive_finite("sigma_init", sigma_init)
    roi = _check_roi(default_roi_size(sigma_init) if roi_size is None else roi_size)
    r2 = float(read_variance)
    if not (math.isfinite(r2) and r2 >= 0.0):
        raise ValueError(f"read_variance must be a finite variance >= 0 in photons^2; got {read_variance!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an integer >= 1; got {max_iterations!r}")
    if initial is None:
        init = _NO_INITIAL
    else:
        init = np.ascontiguousarray(initial, dtype=np.float64)
        if init.shape != (n, _k.N_PARAMS):
            raise ValueError(
                f"initial must have shape (S, 5) = ({n}, 5) like centers_xy, in the order {PARAMETER_NAMES}; "
                f"got {init.shape}. Use NaN for spots without a warm start."
            )
    _check_out("params_out", params_out, (n, _k.N_PARAMS), np.float64)
    _check_out("crlb_out", crlb_out, (n, _k.N_PARAMS), np.float64)
    _check_out("loglik_out", loglik_out, (n,), np.float64)
    _check_out("iters_out", iters_out, (n,), np.int32)
    _check_out("status_out", status_out, (n,), np.int8)
    args = (roi, sigma_init, r2, int(max_iterations), params_out, crlb_out, loglik_out, iters_out, status_out)
    if parallel:
        _k.fit_spots_parallel(image, centers, init, *args)
    else:
        _k.fit_spots_range(image, centers, init, 0, n, *args)


def crlb_for(params: np.ndarray, roi_size: int, read_variance: float = 0.0) -> Float64Array:
    """Cramér-Rao lower bound of spots with known true parameters.

    Each spot is placed in a ``roi_size`` ROI centred on its rounded position,
    the situation ``fit_spots`` sees for a spot away from the image edges.

    Parameters
    ----------
    params : (S, 5) array
        True ``(x, y, N, sigma, b)`` (px, px, photons, px, photons/px).
    roi_size : int
        Odd ROI side, 5..15 px.
    read_variance : float
        sCMOS read-noise variance, photons^2.

    Returns
    -------
    (S, 5) float64
        Variances in the order ``PARAMETER_NAMES``; NaN for rows with
        non-finite values, ``N <= 0``, ``sigma <= 0`` or ``b + read_variance <= 0``.
    """
    p = np.ascontiguousarray(params, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != _k.N_PARAMS:
        raise ValueError(f"params must have shape (S, 5) in the order {PARAMETER_NAMES}; got {p.shape}")
    roi = _check_roi(roi_size)
    r2 = float(read_variance)
    if not (math.isfinite(r2) and r2 >= 0.0):
        raise ValueError(f"read_variance must be a finite variance >= 0 in photons^2; got {read_variance!r}")
    out = np.empty_like(p)
    _k.crlb_at(p, roi, r2, out)
    return out


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be one 2-D frame (H, W) in photons; got shape {image.shape}")
    if image.dtype == np.float32 or image.dtype == np.float64:
        return np.ascontiguousarray(image)  # one compiled kernel per dtype; a no-op for whole frames
    if image.dtype.kind in "iu" or image.dtype == np.float16:
        return image.astype(np.float32)  # exact for counts below 2**24
    raise TypeError(f"image must hold real numbers (float32/float64 preferred); got dtype {image.dtype}")


def _as_centers(centers_xy: np.ndarray) -> Float64Array:
    centers = np.ascontiguousarray(centers_xy, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 2:
        if centers.size == 0:
            return np.empty((0, 2))
        raise ValueError(f"centers_xy must have shape (S, 2) holding (x, y) in px; got {centers.shape}")
    return centers


def _positive_finite(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0 (px); got {value!r}")
    return value


def _check_roi(roi_size: int) -> int:
    if isinstance(roi_size, bool) or not isinstance(roi_size, (int, np.integer)):
        raise ValueError(f"roi_size must be an odd integer from 5 to 15 px; got {roi_size!r}")
    roi = int(roi_size)
    if roi % 2 == 0 or not ROI_SIZE_MIN <= roi <= ROI_SIZE_MAX:
        hint = f" Round up to {roi + 1}." if roi % 2 == 0 and roi < ROI_SIZE_MAX else ""
        raise ValueError(f"roi_size must be an odd integer from 5 to 15 px; got {roi}.{hint}")
    return roi


def _check_out(name: str, array: np.ndarray, shape: tuple[int, ...], dtype: type) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{name} must be a {np.dtype(dtype).name} array of shape {shape}; got {got}")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous and writeable; allocate it with np.empty({shape})")
