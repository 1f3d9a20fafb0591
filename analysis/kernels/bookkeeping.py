"""Numba kernels for the per-spot bookkeeping of one frame (numpy, numba and math only).

They replace chains of small numpy operations (each a temporary array and a
trip through the interpreter) in :mod:`plstream.analysis.analyzer`. Spot arrays
are indexed by spot ID, positions are (x, y) px, x = column, y = row.
Columns of the per-spot fit table ``fit`` (S, 6): x px, y px, photons,
sigma px, background photons/px, localization standard error px.
"""

import math

from numba import njit

FIT_X, FIT_Y, FIT_N, FIT_SIGMA, FIT_B, FIT_UNC = range(6)
N_FIT_COLUMNS = 6
_STATUS_OK = 0  # fit.FitStatus.OK


@njit(cache=True, nogil=True)
def _has_signal(image, x, y, half, background, read_variance, min_sigma):
    """Pre-screen: are the photons in the (2 half + 1)^2 box at (x, y) significant?

    ``sum(d) - n b >= min_sigma * sqrt(n (max(b, 0) + read_variance))`` with
    ``b`` the spot's last measured background (photons/px). Undecidable cases
    (centre not finite, box not wholly inside the image, no background yet,
    zero noise) count as signal, so the spot is fitted.
    """
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(background)):
        return True
    height, width = image.shape
    cx = int(math.floor(x + 0.5))
    cy = int(math.floor(y + 0.5))
    if cx - half < 0 or cy - half < 0 or cx + half >= width or cy + half >= height:
        return True
    total = 0.0
    for r in range(cy - half, cy + half + 1):
        for c in range(cx - half, cx + half + 1):
            total += image[r, c]
    n = (2 * half + 1) * (2 * half + 1)
    variance = n * (max(background, 0.0) + read_variance)
    if not variance > 0.0:
        return True
    return total - n * background >= min_sigma * math.sqrt(variance)


@njit(cache=True, nogil=True)
def select_for_fit(
    image,
    ref_xy,
    drift_x,
    drift_y,
    warm,
    last_background,
    half,
    read_variance,
    min_sigma,
    index_out,
    centers_out,
    initial_out,
):
    """Spots to fit this frame, their centres (reference + drift) and warm starts.

    With ``min_sigma > 0`` a spot is fitted only when :func:`_has_signal`;
    ``min_sigma <= 0`` fits every spot. Writes the first k rows of
    ``index_out`` (spot IDs, ascending), ``centers_out`` (k, 2) frame px and
    ``initial_out`` (k, 5) (the spot's row of ``warm``); returns k.
    """
    k = 0
    for i in range(ref_xy.shape[0]):
        x = ref_xy[i, 0] + drift_x
        y = ref_xy[i, 1] + drift_y
        if min_sigma > 0.0 and not _has_signal(image, x, y, half, last_background[i], read_variance, min_sigma):
            continue
        index_out[k] = i
        centers_out[k, 0] = x
        centers_out[k, 1] = y
        for j in range(warm.shape[1]):
            initial_out[k, j] = warm[i, j]
        k += 1
    return k


@njit(cache=True, nogil=True)
def scatter_fits(
    index,
    params,
    crlb,
    status,
    min_photons_snr,
    ref_xy,
    ref_weight,
    fit_out,
    success_out,
    displacement_out,
    variance_out,
    usable_out,
):
    """Per-spot fit table from the fits of the selected spots, and the drift inputs.

    ``index`` (k,) spot IDs of the fitted rows of ``params``/``crlb`` (k, 5)
    and ``status`` (k,). A fit succeeds when its status is OK and
    ``photons / sqrt(crlb_N) >= min_photons_snr``; ``fit_out`` (S, 6) gets its
    values (see the module notes; standard error ``sqrt((crlb_x + crlb_y) / 2)``),
    NaN for spots not fitted or failed. For the drift: ``displacement_out``
    (S, 2) fit minus reference position, ``variance_out`` (S,) fit variance plus
    reference variance (``1 / ref_weight``, inf before its first fit) and
    ``usable_out`` (S,) = success and the reference was fitted before.
    """
    n = ref_xy.shape[0]
    for i in range(n):
        for j in range(N_FIT_COLUMNS):
            fit_out[i, j] = math.nan
        success_out[i] = False
        usable_out[i] = False
        displacement_out[i, 0] = math.nan
        displacement_out[i, 1] = math.nan
        variance_out[i] = math.nan
    for k in range(index.shape[0]):
        i = index[k]
        snr = params[k, 2] / math.sqrt(crlb[k, 2])
        if not (status[k] == _STATUS_OK and snr >= min_photons_snr):
            continue
        unc = math.sqrt(0.5 * (crlb[k, 0] + crlb[k, 1]))
        for j in range(5):
            fit_out[i, j] = params[k, j]
        fit_out[i, FIT_UNC] = unc
        success_out[i] = True
        w = ref_weight[i]
        displacement_out[i, 0] = params[k, 0] - ref_xy[i, 0]
        displacement_out[i, 1] = params[k, 1] - ref_xy[i, 1]
        variance_out[i] = unc**2 + (1.0 / max(w, 1e-300) if w > 0 else math.inf)
        usable_out[i] = w > 0


@njit(cache=True, nogil=True)
def refine_references(
    fit, success, inliers, drift_x, drift_y, cos_t, sin_t, cx, cy, match_radius, ref_xy, ref_weight, warm
):
    """Fold this frame's good fits into the reference positions; keep them as warm starts.

    A spot's drift-corrected fit ``m = R(-theta) (fit - c - d) + c`` (the
    frame's rigid transform undone: ``cos_t``, ``sin_t`` of theta, centre
    ``(cx, cy)``, translation ``(drift_x, drift_y)``) is used when the fit
    succeeded and either it was a drift inlier or it is the spot's first fit
    and lies within ``match_radius`` of the detected position; it enters the
    inverse-variance weighted mean ``(xy w + m w_new) / (w + w_new)``,
    ``w_new = 1 / unc^2``. ``warm`` (S, 5) gets each successful fit's
    parameters, NaN otherwise.
    """
    for i in range(ref_xy.shape[0]):
        ok = success[i]
        for j in range(warm.shape[1]):
            warm[i, j] = fit[i, j] if ok else math.nan
        if not ok:
            continue
        u = fit[i, FIT_X] - cx - drift_x
        v = fit[i, FIT_Y] - cy - drift_y
        mx = cos_t * u + sin_t * v + cx
        my = -sin_t * u + cos_t * v + cy
        w_old = ref_weight[i]
        if not inliers[i]:
            if w_old != 0.0 or math.hypot(mx - ref_xy[i, 0], my - ref_xy[i, 1]) > match_radius:
                continue
        variance = fit[i, FIT_UNC] ** 2
        if not (math.isfinite(variance) and variance > 0.0):
            continue
        w_new = 1.0 / variance
        total = w_old + w_new
        ref_xy[i, 0] = (ref_xy[i, 0] * w_old + mx * w_new) / total
        ref_xy[i, 1] = (ref_xy[i, 1] * w_old + my * w_new) / total
        ref_weight[i] = total


@njit(cache=True, nogil=True)
def off_noise_sigma(intensity, intensity_variance, out):
    """Standard deviation of the aperture intensity of an OFF spot, photons.

    ``sqrt(max(var - max(I, 0), 1e-12))``: the variance less the spot's own
    shot noise (a NaN intensity counts as 0); NaN where the variance is NaN.
    """
    for i in range(intensity.shape[0]):
        value = intensity[i]
        shot = max(value, 0.0) if math.isfinite(value) else 0.0
        off = intensity_variance[i] - shot
        out[i] = math.sqrt(max(off, 1e-12)) if not math.isnan(off) else math.nan


@njit(cache=True, nogil=True)
def write_record(intensity, background, weighted, fit, success, row32, fit_xy, success_out):
    """The per-spot arrays of one result row, from the frame's work arrays.

    ``row32`` (9, S) float32 receives intensity, background, weighted, then
    the fit's photons, sigma, background, uncertainty (rows 3-6; NaN where the
    fit failed or was not made); ``fit_xy`` (2, S) float64 the fitted x and y;
    ``success_out`` (S,) int8 1 for a successful fit.
    """
    for i in range(intensity.shape[0]):
        row32[0, i] = intensity[i]
        row32[1, i] = background[i]
        row32[2, i] = weighted[i]
        row32[3, i] = fit[i, FIT_N]
        row32[4, i] = fit[i, FIT_SIGMA]
        row32[5, i] = fit[i, FIT_B]
        row32[6, i] = fit[i, FIT_UNC]
        fit_xy[0, i] = fit[i, FIT_X]
        fit_xy[1, i] = fit[i, FIT_Y]
        success_out[i] = 1 if success[i] else 0
