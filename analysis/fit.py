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
``kernels.fit``; the model and its derivatives are in ``kernels.fit_model``).
It converges when the next step is below 1e-4 px in x and y and 1e-5 N, or below
0.01 standard errors. The CRLB is the diagonal of the inverse Fisher information
``sum dmu dmu^T / mu'`` at the fitted parameters, inverted in float64.

A ROI without a significant spot (a blinking particle that is OFF: pure
background) stops early, typically after 2-4 steps instead of running to
``max_iterations``: as soon as its photon count is pushed onto zero or stays
below ``no_signal_snr`` standard errors. It gets ``FitStatus.NO_SIGNAL`` and the
fit of the no-spot model (see ``SpotFits``).

Threads: the kernels release the GIL (callers may fit frames in threads), and
``parallel=True`` spreads the spots over numba's threads with results
bit-identical to the serial loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from plstream.analysis.kernels import fit as _k

__all__ = [
    "PARAMETER_NAMES",
    "FitStatus",
    "SpotFits",
    "crlb_for",
    "default_roi_size",
    "fit_spots",
    "fit_spots_into",
]

logger = logging.getLogger(__name__)

Float64Array = NDArray[np.float64]
ParamsArray = NDArray[np.float64]  # (S, 5): x px, y px, N photons, sigma px, b photons/px

#: Column order of every (S, 5) parameter or CRLB array.
PARAMETER_NAMES = ("x", "y", "photons", "sigma", "background")
ROI_SIZE_MIN = 5
ROI_SIZE_MAX = 63  # 2 ceil(3 sigma) + 1 for particles up to 10 px wide

_NO_INITIAL = np.empty((0, _k.N_PARAMS))  # no warm start (empty, so never written)


class FitStatus(IntEnum):
    """Outcome of one spot fit (stored as int8)."""

    OK = _k.STATUS_OK
    NOT_CONVERGED = _k.STATUS_NOT_CONVERGED  # max_iterations reached
    OUT_OF_BOUNDS = _k.STATUS_OUT_OF_BOUNDS  # position ran into its bound, roi/2 px from its start
    NOT_FINITE = _k.STATUS_NOT_FINITE  # NaN/Inf pixel or centre, or a non-finite result
    ROI_OUTSIDE_IMAGE = _k.STATUS_ROI_OUTSIDE  # image smaller than the ROI, or centre > roi/2 outside it
    SINGULAR = _k.STATUS_SINGULAR  # Fisher matrix not invertible
    NO_SIGNAL = _k.STATUS_NO_SIGNAL  # photons below no_signal_snr standard errors: the no-spot model is reported


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
        (px^2, px^2, photons^2, px^2, (photons/px)^2); NaN when not computed
        (``inf`` for parameters a ``NO_SIGNAL`` ROI holds no information about).
    log_likelihood : (S,) float64
        Poisson log-likelihood ratio to the saturated model,
        ``sum d' ln(mu'/d') - (mu' - d')`` (<= 0; minus twice it is the deviance,
        about chi-square with ``roi_size**2 - 5`` degrees of freedom for a good fit).
    iterations : (S,) int32
        Levenberg-Marquardt steps solved.
    status : (S,) int8
        A ``FitStatus`` code; failed spots keep their last parameter values
        (NaN when the fit could not start), except ``NO_SIGNAL`` spots, which
        hold the fit of the no-spot model: ``photons = 0``, ``background`` = its
        maximum-likelihood estimate (ROI mean), ``x, y, sigma`` = the start values
        (where the spot was looked for), ``crlb`` = ``inf`` for x, y and sigma and,
        for photons and background, the bound at ``photons = 0`` (so
        ``sqrt(crlb[:, 2])`` is the photon count of one standard error there), and
        ``log_likelihood`` of that model.
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
    """Fitting ROI for a PSF width: ``2 * ceil(3 sigma) + 1`` px, clipped to 5..63."""
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
    no_signal_snr: float = _k.NO_SIGNAL_SNR,
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
        Odd ROI side, 5..63 px; default ``default_roi_size(sigma_init)``.
    read_variance : float
        sCMOS read-noise variance, photons^2 (0: pure Poisson).
    max_iterations : int
        Levenberg-Marquardt steps before giving up (status ``NOT_CONVERGED``).
    initial : (S, 5) array, optional
        Warm start in the order ``PARAMETER_NAMES`` (frame px); NaN entries or
        rows fall back to the default start (border background, centroid,
        ``sigma_init``).
    parallel : bool
        Spread the spots over numba's threads (results are bit-identical).
    no_signal_snr : float
        Significance (photons over their standard error) below which a ROI
        counts as empty. A fit whose photons are pushed onto zero, or stay below
        it while iterating, stops early as ``FitStatus.NO_SIGNAL``; so does a
        converged fit below it by its CRLB. The data can veto: a ROI with a 3x3
        box 4 or more standard errors above its mean is fitted on. Stopping
        early can end fits that would have converged to up to about twice this
        value (never above 4 at the default 2 in our simulations), so keep it at
        most half the significance the caller requires of a spot (the
        analyzer's ``fit.min_photons_snr`` is 5). 0 turns the significance rules
        off (photons pushed onto zero still stop the fit).

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
        no_signal_snr=no_signal_snr,
    )
    x, y, photons, sigma, background = params.T.copy()  # PARAMETER_NAMES order, each row contiguous
    return SpotFits(x, y, photons, sigma, background, crlb, loglik, iterations, status)


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
    no_signal_snr: float = _k.NO_SIGNAL_SNR,
) -> None:
    """``fit_spots`` into caller-allocated outputs (no allocation for float32/float64 inputs).

    Parameters
    ----------
    image, centers_xy, sigma_init, roi_size, read_variance, max_iterations, initial, parallel, no_signal_snr
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
    snr = float(no_signal_snr)
    if not (math.isfinite(snr) and snr >= 0.0):
        raise ValueError(f"no_signal_snr must be a finite number of standard errors >= 0; got {no_signal_snr!r}")
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
    args = (roi, sigma_init, r2, int(max_iterations), snr, params_out, crlb_out, loglik_out, iters_out, status_out)
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
        Odd ROI side, 5..63 px.
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
        raise ValueError(f"roi_size must be an odd integer from {ROI_SIZE_MIN} to {ROI_SIZE_MAX} px; got {roi_size!r}")
    roi = int(roi_size)
    if roi % 2 == 0 or not ROI_SIZE_MIN <= roi <= ROI_SIZE_MAX:
        hint = f" Round up to {roi + 1}." if roi % 2 == 0 and roi < ROI_SIZE_MAX else ""
        raise ValueError(f"roi_size must be an odd integer from {ROI_SIZE_MIN} to {ROI_SIZE_MAX} px; got {roi}.{hint}")
    return roi


def _check_out(name: str, array: np.ndarray, shape: tuple[int, ...], dtype: type) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{name} must be a {np.dtype(dtype).name} array of shape {shape}; got {got}")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous and writeable; allocate it with np.empty({shape})")
