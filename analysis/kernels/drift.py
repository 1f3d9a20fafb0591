"""Numba kernels for drift estimation (numpy, numba and math only)."""

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def weighted_median(values, weights):
    """Weighted median of ``values`` (1-D) with positive ``weights``; NaN if empty."""
    n = values.shape[0]
    if n == 0:
        return math.nan
    order = np.argsort(values)
    total = 0.0
    for i in range(n):
        total += weights[i]
    half = 0.5 * total
    running = 0.0
    for k in range(n):
        running += weights[order[k]]
        if running >= half:
            return values[order[k]]
    return values[order[n - 1]]


@njit(cache=True, nogil=True)
def robust_mean_displacement(displacements, variances, usable, clip_sigma, clip_floor_px, inlier_out):
    """Robust inverse-variance weighted mean of per-spot displacements.

    Parameters
    ----------
    displacements : (S, 2) float64
        Measured minus reference position of each spot, px (dx, dy).
    variances : (S,) float64
        Variance of each displacement, px^2 (per axis).
    usable : (S,) bool
        Spots that may take part.
    clip_sigma, clip_floor_px : float
        A spot is an outlier when it is farther from the weighted median than
        ``max(clip_sigma * sqrt(variance), clip_floor_px)`` on either axis.
    inlier_out : (S,) bool
        Written: the spots used in the final mean.

    Returns
    -------
    dx, dy, standard_error, n_used
    """
    s = displacements.shape[0]
    m = 0
    for i in range(s):
        inlier_out[i] = False
        if usable[i] and variances[i] > 0.0 and math.isfinite(variances[i]):
            if math.isfinite(displacements[i, 0]) and math.isfinite(displacements[i, 1]):
                m += 1
    if m == 0:
        return math.nan, math.nan, math.inf, 0
    xs = np.empty(m)
    ys = np.empty(m)
    ws = np.empty(m)
    idx = np.empty(m, np.int64)
    k = 0
    for i in range(s):
        if usable[i] and variances[i] > 0.0 and math.isfinite(variances[i]):
            if math.isfinite(displacements[i, 0]) and math.isfinite(displacements[i, 1]):
                xs[k] = displacements[i, 0]
                ys[k] = displacements[i, 1]
                ws[k] = 1.0 / variances[i]
                idx[k] = i
                k += 1
    med_x = weighted_median(xs, ws)
    med_y = weighted_median(ys, ws)
    sum_w = 0.0
    sum_x = 0.0
    sum_y = 0.0
    n_used = 0
    for k in range(m):
        limit = max(clip_sigma / math.sqrt(ws[k]), clip_floor_px)
        if abs(xs[k] - med_x) <= limit and abs(ys[k] - med_y) <= limit:
            sum_w += ws[k]
            sum_x += ws[k] * xs[k]
            sum_y += ws[k] * ys[k]
            inlier_out[idx[k]] = True
            n_used += 1
    if n_used == 0:
        return math.nan, math.nan, math.inf, 0
    return sum_x / sum_w, sum_y / sum_w, math.sqrt(1.0 / sum_w), n_used
