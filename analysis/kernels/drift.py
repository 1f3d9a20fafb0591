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


@njit(cache=True, nogil=True)
def rigid_apply(ref_xy, cos_t, sin_t, cx, cy, dx, dy, out):
    """``out[i] = R (ref_xy[i] - c) + c + d`` with ``R = [[cos, -sin], [sin, cos]]`` (x = column, y = row)."""
    for i in range(ref_xy.shape[0]):
        u = ref_xy[i, 0] - cx
        v = ref_xy[i, 1] - cy
        out[i, 0] = cos_t * u - sin_t * v + cx + dx
        out[i, 1] = sin_t * u + cos_t * v + cy + dy


@njit(cache=True, nogil=True)
def _rigid_solve(px, py, qx, qy, w, keep, fit_rotation, theta0, cx, cy, r_max, rotation_gate_px, out):
    """Weighted least-squares rigid transform taking the kept p onto q.

    ``out`` = [dx, dy, theta, se_dx, se_dy, se_theta, n, rotation_fitted]
    (translation about c). With ``fit_rotation`` the rotation is solved
    (Procrustes: ``theta = atan2(sum w (p' x q'), sum w (p' . q'))`` about
    the weighted centroids) unless its standard error times ``r_max`` exceeds
    ``rotation_gate_px`` (the points do not spread enough): then, as without
    ``fit_rotation``, it stays ``theta0`` and only the translation is solved.
    """
    sw = 0.0
    spx = 0.0
    spy = 0.0
    sqx = 0.0
    sqy = 0.0
    n = 0
    for i in range(px.shape[0]):
        if keep[i]:
            sw += w[i]
            spx += w[i] * px[i]
            spy += w[i] * py[i]
            sqx += w[i] * qx[i]
            sqy += w[i] * qy[i]
            n += 1
    out[6] = n
    out[7] = 0.0
    if n == 0 or not sw > 0.0:
        for k in range(6):
            out[k] = math.nan
        return
    mpx = spx / sw
    mpy = spy / sw
    mqx = sqx / sw
    mqy = sqy / sw
    theta = theta0
    se_theta = math.inf
    if fit_rotation and n >= 3:
        s_cos = 0.0
        s_sin = 0.0
        s_rr = 0.0
        for i in range(px.shape[0]):
            if keep[i]:
                ux = px[i] - mpx
                uy = py[i] - mpy
                vx = qx[i] - mqx
                vy = qy[i] - mqy
                s_cos += w[i] * (ux * vx + uy * vy)
                s_sin += w[i] * (ux * vy - uy * vx)
                s_rr += w[i] * (ux * ux + uy * uy)
        if s_rr > 0.0:
            se = math.sqrt(1.0 / s_rr)
            if se * r_max <= rotation_gate_px:
                theta = math.atan2(s_sin, s_cos)
                se_theta = se
                out[7] = 1.0
    c = math.cos(theta)
    s = math.sin(theta)
    ux = mpx - cx
    uy = mpy - cy
    rx = c * ux - s * uy
    ry = s * ux + c * uy
    out[0] = mqx - cx - rx
    out[1] = mqy - cy - ry
    out[2] = theta
    var_t = 1.0 / sw
    if out[7] > 0.0:
        out[3] = math.sqrt(var_t + se_theta * se_theta * ry * ry)
        out[4] = math.sqrt(var_t + se_theta * se_theta * rx * rx)
        out[5] = se_theta
    else:
        out[3] = math.sqrt(var_t)
        out[4] = math.sqrt(var_t)
        out[5] = math.inf


@njit(cache=True, nogil=True)
def robust_rigid(
    ref_xy,
    displacements,
    variances,
    usable,
    cx,
    cy,
    theta0,
    dx0,
    dy0,
    fit_rotation,
    r_max,
    rotation_gate_px,
    clip_sigma,
    clip_floor_px,
    inlier_out,
    out,
):
    """Robust weighted rigid fit (translation + rotation about c) of fitted spots to their references.

    Parameters
    ----------
    ref_xy : (S, 2) float64
        Reference (frame-0) positions, px.
    displacements : (S, 2) float64
        Fitted position in this frame minus the reference position, px.
    variances : (S,) float64
        Variance of each fitted position per axis (fit CRLB + reference), px^2.
    usable : (S,) bool
        Spots that may take part.
    cx, cy : float
        Rotation centre, px.
    theta0, dx0, dy0 : float
        The predicted transform (the previous frame's): outliers are judged
        by their residuals from it first, then from the fitted transform.
    fit_rotation : bool
        Solve the rotation too (else it stays ``theta0``).
    r_max, rotation_gate_px : float
        See :func:`_rigid_solve`.
    clip_sigma, clip_floor_px : float
        A spot is an outlier when its residual (around the weighted median of
        the residuals, then around 0 from the fit) exceeds
        ``max(clip_sigma * sqrt(variance), clip_floor_px)`` on either axis
        (in the first round also 4 robust SDs of the residuals, so that a
        rotation the prediction lacks does not make every spot an outlier).
    inlier_out : (S,) bool
        Written: the spots of the final fit.
    out : (9,) float64
        Written: [dx, dy, theta, se_dx, se_dy, se_theta, n_used, rotation_fitted, chi2_per_dof].
    """
    s = ref_xy.shape[0]
    m = 0
    for i in range(s):
        inlier_out[i] = False
        if usable[i] and variances[i] > 0.0 and math.isfinite(variances[i]):
            if math.isfinite(displacements[i, 0]) and math.isfinite(displacements[i, 1]):
                m += 1
    for k in range(9):
        out[k] = math.nan
    out[6] = 0.0
    out[7] = 0.0
    if m == 0:
        return
    px = np.empty(m)
    py = np.empty(m)
    qx = np.empty(m)
    qy = np.empty(m)
    ws = np.empty(m)
    rx = np.empty(m)
    ry = np.empty(m)
    keep = np.zeros(m, np.bool_)
    idx = np.empty(m, np.int64)
    k = 0
    c0 = math.cos(theta0)
    s0 = math.sin(theta0)
    for i in range(s):
        if usable[i] and variances[i] > 0.0 and math.isfinite(variances[i]):
            if math.isfinite(displacements[i, 0]) and math.isfinite(displacements[i, 1]):
                px[k] = ref_xy[i, 0]
                py[k] = ref_xy[i, 1]
                qx[k] = ref_xy[i, 0] + displacements[i, 0]
                qy[k] = ref_xy[i, 1] + displacements[i, 1]
                ws[k] = 1.0 / variances[i]
                u = px[k] - cx
                v = py[k] - cy
                rx[k] = qx[k] - (c0 * u - s0 * v + cx + dx0)
                ry[k] = qy[k] - (s0 * u + c0 * v + cy + dy0)
                idx[k] = i
                k += 1
    med_x = weighted_median(rx, ws)
    med_y = weighted_median(ry, ws)
    # First round: also allow for the spread of the residuals themselves (a rotation the prediction
    # lacks spreads them over the field); the fitted transform then judges every spot tightly.
    spread = np.empty(2 * m)
    for k in range(m):
        spread[k] = abs(rx[k] - med_x)
        spread[m + k] = abs(ry[k] - med_y)
    wide = 4.0 * 1.4826 * np.median(spread)
    n_keep = 0
    for k in range(m):
        limit = max(clip_sigma / math.sqrt(ws[k]), clip_floor_px, wide)
        keep[k] = abs(rx[k] - med_x) <= limit and abs(ry[k] - med_y) <= limit
        n_keep += keep[k]
    if n_keep == 0:
        return
    for _ in range(2):
        _rigid_solve(px, py, qx, qy, ws, keep, fit_rotation, theta0, cx, cy, r_max, rotation_gate_px, out)
        c = math.cos(out[2])
        sn = math.sin(out[2])
        n_keep = 0
        for k in range(m):
            u = px[k] - cx
            v = py[k] - cy
            rx[k] = qx[k] - (c * u - sn * v + cx + out[0])
            ry[k] = qy[k] - (sn * u + c * v + cy + out[1])
            limit = max(clip_sigma / math.sqrt(ws[k]), clip_floor_px)
            keep[k] = abs(rx[k]) <= limit and abs(ry[k]) <= limit
            n_keep += keep[k]
        if n_keep == 0:
            for j in range(9):
                out[j] = math.nan
            out[6] = 0.0
            out[7] = 0.0
            return
    _rigid_solve(px, py, qx, qy, ws, keep, fit_rotation, theta0, cx, cy, r_max, rotation_gate_px, out)
    c = math.cos(out[2])
    sn = math.sin(out[2])
    chi2 = 0.0
    for k in range(m):
        if keep[k]:
            inlier_out[idx[k]] = True
            u = px[k] - cx
            v = py[k] - cy
            ex = qx[k] - (c * u - sn * v + cx + out[0])
            ey = qy[k] - (sn * u + c * v + cy + out[1])
            chi2 += ws[k] * (ex * ex + ey * ey)
    dof = 2.0 * out[6] - (3.0 if out[7] > 0.0 else 2.0)
    out[8] = chi2 / dof if dof > 0.0 else math.nan
