"""Numba kernels: pixel-integrated 2D Gaussian Poisson-MLE fit with CRLB (numpy, numba and math only).

Model, in ROI-local coordinates (pixel ``(r, c)`` of the ROI has its centre at
``(x, y) = (c, r)``)::

    mu[r, c] = N * dEx[c] * dEy[r] + b
    dE(u; m, s) = 1/2 [erf((u - m + 1/2) / (sqrt(2) s)) - erf((u - m - 1/2) / (sqrt(2) s))]

Parameter order everywhere: ``(x, y, N, sigma, b)`` (px, px, photons, px,
photons/px). sCMOS read noise (Huang et al. 2013): data ``d' = max(d + r2, 0)``
and model ``mu' = mu + r2`` are treated as Poisson.

Optimizer: Levenberg-Marquardt over all five parameters. Far from the optimum
(a step with ``step^T M step > 1``, i.e. beyond the statistical error) it uses
Fisher scoring, ``M = F = sum dmu dmu^T / mu'`` (positive definite everywhere),
and checks each step against the log-likelihood. Close to it, steps are exact
Newton steps on the observed information ``-d2 logL`` (quadratic convergence:
half the iterations of Fisher scoring at N ~ 200-300 photons), taken without the
per-pixel logarithms. The last evaluation uses ``F`` again, the Fisher
information of the CRLB. Box constraints: clamping, and parameters on a bound
with the gradient pointing outwards are frozen for the step.
"""

import math

import numpy as np
from numba import njit, prange

N_PARAMS = 5
IX, IY, IN, IS, IB = 0, 1, 2, 3, 4

# status codes (int8), explained by fit.FitStatus
STATUS_OK, STATUS_NOT_CONVERGED, STATUS_OUT_OF_BOUNDS, STATUS_NOT_FINITE, STATUS_ROI_OUTSIDE, STATUS_SINGULAR = range(6)

SIGMA_MIN_PX = 0.3
PHOTONS_FLOOR = 1e-3
BACKGROUND_FLOOR = 1e-3
TOL_XY_PX = 1e-4
TOL_N_REL = 1e-5
_NEAR_XY_PX = 10.0 * TOL_XY_PX  # a Newton step this small converges with the next one
_NEAR_N_REL = 10.0 * TOL_N_REL
_MAX_SHRINK = 0.1
_CHECKED_STEP = 1.0  # steps with step^T F step above this are checked against the log-likelihood
_LAMBDA_START = 1e-3
_LAMBDA_MIN = 1e-7
_LAMBDA_MAX = 1e10
_PIVOT_MIN = 1e-12  # relative to the diagonal
_SPOTS_PER_BLOCK = 16
_TRIAL, _AGAIN, _FINAL, _DONE = 0, 1, 2, 3  # what fit_roi does next

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, nogil=True)
def axis_terms(n, mu, sigma, out, row):
    """Pixel-integrated 1-D Gaussian on pixels ``0..n-1`` and its derivatives.

    Writes ``out[row + k, j]`` for k = 0..4: ``dE``, ``d dE/d mu``, ``d dE/d sigma``,
    ``d2 dE/d mu d sigma`` and ``d2 dE/d sigma2`` (``d2 dE/d mu2`` is ``(d dE/d sigma) / sigma``,
    the heat equation). One erfc and one exp per pixel edge; ``dE`` is formed
    from upper-tail probabilities, so far tails keep their relative precision.
    """
    scale = _INV_SQRT2 / sigma
    inv_s = 1.0 / sigma
    inv_s2 = inv_s * inv_s
    s0 = -0.5 - mu  # edge minus centre
    z0 = s0 * scale
    t0 = 0.5 * math.erfc(abs(z0))
    p0 = _INV_SQRT2PI * inv_s * math.exp(-z0 * z0)  # Gaussian density at the edge
    for j in range(n):
        s1 = s0 + 1.0
        z1 = s1 * scale
        t1 = 0.5 * math.erfc(abs(z1))
        p1 = _INV_SQRT2PI * inv_s * math.exp(-z1 * z1)
        if z0 >= 0.0:
            out[row, j] = t0 - t1
        elif z1 <= 0.0:
            out[row, j] = t1 - t0
        else:
            out[row, j] = 1.0 - t0 - t1
        a1 = s1 * p1
        a0 = s0 * p0
        d_mu = p0 - p1
        d_s = (a0 - a1) * inv_s
        out[row + 1, j] = d_mu
        out[row + 2, j] = d_s
        out[row + 3, j] = (s0 * a0 - s1 * a1) * inv_s2 * inv_s - d_mu * inv_s
        out[row + 4, j] = (s0 * s0 * a0 - s1 * s1 * a1) * inv_s2 * inv_s2 - 2.0 * d_s * inv_s
        s0, z0, t0, p0 = s1, z1, t1, p1


@njit(cache=True, nogil=True)
def accumulate(data, r2, theta, axes, grad, info, with_ll, observed, fresh_axes):
    """Gradient and information matrix of the log-likelihood at ``theta`` (ROI-local).

    ``data`` (R, R) holds ``d' = max(d + r2, 0)``; ``axes`` (11, R) is work whose rows
    0-4 / 5-9 hold the x / y ``axis_terms`` of ``theta`` afterwards (or before, if
    ``fresh_axes``). Writes ``grad = d logL / d theta`` and ``info``: the Fisher
    information ``sum dmu dmu^T / mu'`` or, if ``observed``, the observed information
    ``-d2 logL = sum d' dmu dmu^T / mu'^2 - (d'/mu' - 1) d2mu``. Returns
    ``sum d' ln mu' - mu'`` if ``with_ll`` (one logarithm per pixel), else 0.
    """
    n = data.shape[0]
    photons = theta[IN]
    inv_s = 1.0 / theta[IS]
    bg = theta[IB] + r2
    if not fresh_axes:
        for a in range(2):  # x terms into rows 0-4, y terms into rows 5-9
            axis_terms(n, theta[IX + a], theta[IS], axes, 5 * a)
    ex, dex, dsx, msx, ssx = axes[0], axes[1], axes[2], axes[3], axes[4]
    model = axes[10]
    grad[:] = 0.0
    info[:, :] = 0.0
    ll = 0.0
    # Each derivative is a sum of (column factor) x (row factor), the column factors
    # being P = dEx/dx, Q = Ex, R = dEx/dsigma and 1: weighted sums over the columns
    # of a row come first and meet the row factors once per row.
    for r in range(n):
        e = axes[5, r]
        ny = photons * e
        nd = photons * axes[6, r]
        ns = photons * axes[7, r]
        for c in range(n):
            model[c] = ex[c] * ny + bg
        if with_ll:  # libm calls in a loop of their own keep the sums below in registers
            for c in range(n):
                ll += data[r, c] * math.log(model[c]) - model[c]
        tp = tq = tr = tu = tms = tss = 0.0
        pp = pq = pr = pu = qq = qr = qu = rr = ru = uu = 0.0
        for c in range(n):
            q = ex[c]
            p = dex[c]
            s = dsx[c]
            w = 1.0 / model[c]
            dw = data[r, c] * w
            t = dw - 1.0
            tp += t * p
            tq += t * q
            tr += t * s
            tu += t
            if observed:
                tms += t * msx[c]
                tss += t * ssx[c]
                w *= dw
            wp = w * p
            wq = w * q
            wr = w * s
            pp += wp * p
            pq += wp * q
            pr += wp * s
            pu += wp
            qq += wq * q
            qr += wq * s
            qu += wq
            rr += wr * s
            ru += wr
            uu += w
        sq = ny * qr + ns * qq  # sum over the row of w * Q * dmu/dsigma
        grad[IX] += ny * tp
        grad[IY] += nd * tq
        grad[IN] += e * tq
        grad[IS] += ny * tr + ns * tq
        grad[IB] += tu
        info[0, 0] += ny * ny * pp
        info[0, 1] += ny * nd * pq
        info[0, 2] += ny * e * pq
        info[0, 3] += ny * (ny * pr + ns * pq)
        info[0, 4] += ny * pu
        info[1, 1] += nd * nd * qq
        info[1, 2] += nd * e * qq
        info[1, 3] += nd * sq
        info[1, 4] += nd * qu
        info[2, 2] += e * e * qq
        info[2, 3] += e * sq
        info[2, 4] += e * qu
        info[3, 3] += ny * ny * rr + 2.0 * ny * ns * qr + ns * ns * qq
        info[3, 4] += ny * ru + ns * qu
        info[4, 4] += uu
        if observed:  # minus sum t * d2mu; d2 dE/dmu2 = (d dE/dsigma) / sigma
            info[0, 0] -= ny * tr * inv_s
            info[0, 1] -= nd * tp
            info[0, 2] -= e * tp
            info[0, 3] -= ny * tms + ns * tp
            info[1, 1] -= ns * inv_s * tq
            info[1, 2] -= axes[6, r] * tq
            info[1, 3] -= nd * tr + photons * axes[8, r] * tq
            info[2, 3] -= e * tr + axes[7, r] * tq
            info[3, 3] -= ny * tss + 2.0 * ns * tr + photons * axes[9, r] * tq
    for i in range(1, N_PARAMS):
        for j in range(i):
            info[i, j] = info[j, i]
    return ll


@njit(cache=True, nogil=True)
def log_likelihood_ratio(data, r2, theta, axes, fresh_axes):
    """``sum d' ln(mu'/d') - (mu' - d')`` at ``theta``: the Poisson log-likelihood ratio to the
    saturated model (<= 0; minus twice it is the deviance). ``axes`` as in ``accumulate``."""
    n = data.shape[0]
    if not fresh_axes:
        for a in range(2):  # x terms into rows 0-4, y terms into rows 5-9
            axis_terms(n, theta[IX + a], theta[IS], axes, 5 * a)
    bg = theta[IB] + r2
    ll = 0.0
    for r in range(n):
        ny = theta[IN] * axes[5, r]
        for c in range(n):
            m = axes[0, c] * ny + bg
            d = data[r, c]
            ll += d * math.log(m / d) - m + d if d > 0.0 else -m
    return ll


@njit(cache=True, nogil=True)
def ldl_factor(a, lam, free, lower, diag):
    """``LDL^T`` of ``a + lam * diag(a)`` over the free parameters (identity rows for the frozen).

    Writes the unit lower factor into ``lower`` and ``D`` into ``diag``; returns
    False when the matrix is not numerically positive definite (a pivot below
    ``_PIVOT_MIN`` times its diagonal entry, or non-finite entries).
    """
    n = a.shape[0]
    for j in range(n):
        if not free[j]:
            diag[j] = 1.0
            for i in range(j + 1, n):
                lower[i, j] = 0.0
            continue
        ajj = a[j, j] * (1.0 + lam)
        d = ajj
        for k in range(j):
            d -= lower[j, k] * lower[j, k] * diag[k]
        if not (d > _PIVOT_MIN * ajj and ajj < math.inf):
            return False
        diag[j] = d
        inv = 1.0 / d
        for i in range(j + 1, n):
            v = a[i, j] if free[i] else 0.0
            for k in range(j):
                v -= lower[i, k] * lower[j, k] * diag[k]
            lower[i, j] = v * inv
    return True


@njit(cache=True, nogil=True)
def solve_step(fisher, grad, lam, free, lower, diag, step):
    """LM step: ``(F + lam diag F) step = grad`` over the free parameters; False if singular."""
    n = grad.shape[0]
    if not ldl_factor(fisher, lam, free, lower, diag):
        return False
    for i in range(n):
        v = grad[i] if free[i] else 0.0
        for k in range(i):
            v -= lower[i, k] * step[k]
        step[i] = v
    for i in range(n - 1, -1, -1):
        v = step[i] / diag[i]
        for k in range(i + 1, n):
            v -= lower[k, i] * step[k]
        step[i] = v
    return True


@njit(cache=True, nogil=True)
def inverse_diagonal(fisher, free_all, lower, diag, out):
    """Diagonal of ``fisher^-1`` (the CRLB variances), float64; False if singular.

    ``free_all`` must be all True; ``lower`` is overwritten by ``L^-1``.
    """
    n = out.shape[0]
    if not ldl_factor(fisher, 0.0, free_all, lower, diag):
        return False
    for j in range(n):  # invert the unit lower factor in place
        for i in range(j + 1, n):
            v = -lower[i, j]
            for k in range(j + 1, i):
                v -= lower[i, k] * lower[k, j]
            lower[i, j] = v
    for i in range(n):
        total = 1.0 / diag[i]
        for k in range(i + 1, n):
            total += lower[k, i] * lower[k, i] / diag[k]
        out[i] = total
    return True


@njit(cache=True, nogil=True)
def initial_guess(data, r2, sigma_init, init_row, edge, theta):
    """Start values (ROI-local) from a warm-start row and the ROI data.

    Each NaN (or out-of-range) entry of ``init_row`` falls back to its default:
    ``b`` = lower quartile of the border pixels, ``N = max(sum(d - b), 1)``,
    ``(x, y)`` = centroid of ``(d - b)+`` (ROI centre if that is empty),
    ``sigma = sigma_init``. ``edge`` is a ``(>= 4R,)`` work buffer.
    """
    n = data.shape[0]
    k = 0
    for i in range(n):
        for v in (data[0, i], data[n - 1, i], data[i, 0], data[i, n - 1]):
            # insertion sort of the border (corners twice; harmless for a quartile)
            j = k - 1
            while j >= 0 and edge[j] > v:
                edge[j + 1] = edge[j]
                j -= 1
            edge[j + 1] = v
            k += 1
    bg = edge[(k - 1) // 4] - r2
    if math.isfinite(init_row[IB]) and init_row[IB] > 0.0:
        bg = init_row[IB]
    bg = max(bg, BACKGROUND_FLOOR)
    total = sx = sy = net = 0.0
    for r in range(n):
        for c in range(n):
            v = data[r, c] - r2 - bg
            net += v
            if v > 0.0:
                total += v
                sx += v * c
                sy += v * r
    theta[IX] = sx / total if total > 0.0 else 0.5 * (n - 1)
    theta[IY] = sy / total if total > 0.0 else 0.5 * (n - 1)
    if math.isfinite(init_row[IX]) and -0.5 <= init_row[IX] <= n - 0.5:
        theta[IX] = init_row[IX]
    if math.isfinite(init_row[IY]) and -0.5 <= init_row[IY] <= n - 0.5:
        theta[IY] = init_row[IY]
    theta[IN] = init_row[IN] if math.isfinite(init_row[IN]) and init_row[IN] > 0.0 else max(net, 1.0)
    sigma = init_row[IS] if math.isfinite(init_row[IS]) and init_row[IS] > 0.0 else sigma_init
    theta[IS] = min(max(sigma, SIGMA_MIN_PX), 0.5 * n)
    theta[IB] = bg


@njit(cache=True, nogil=True)
def make_work(roi):
    """Work buffers for one thread: ``(data, axes, vecs, mats, edge, masks)``."""
    n = N_PARAMS
    return (np.empty((roi, roi)), np.empty((11, roi)), np.empty((10, n)), np.empty((3, n, n)),
            np.empty(4 * roi), np.ones((2, n), dtype=np.bool_))


@njit(cache=True, nogil=True)
def plan_step(theta, grad, info, lam, newton, ll_valid, lo, hi, free, chol, diag, step, trial):
    """Plan one LM step from ``theta`` given its gradient and information matrix.

    Returns ``(phase, status, want_ll, want_observed)``: ``_TRIAL`` (``trial`` is
    written; evaluate it), ``_AGAIN`` (evaluate ``theta`` again: with the
    log-likelihood before a large step, or Fisher's matrix where the observed
    information is not positive definite) or ``_DONE`` (``STATUS_OK`` or
    ``STATUS_SINGULAR``).
    """
    for i in range(N_PARAMS):
        free[i] = not ((theta[i] <= lo[i] and grad[i] < 0.0) or (theta[i] >= hi[i] and grad[i] > 0.0))
    if not solve_step(info, grad, lam, free, chol, diag, step):
        if newton:
            return _AGAIN, STATUS_NOT_CONVERGED, False, False
        return _DONE, STATUS_SINGULAR, False, False
    if (lam <= 1e-2 and abs(step[IX]) < TOL_XY_PX and abs(step[IY]) < TOL_XY_PX
            and abs(step[IN]) < TOL_N_REL * theta[IN]):
        return _DONE, STATUS_OK, False, False
    quad = 0.0
    for i in range(N_PARAMS):
        for j in range(N_PARAMS):
            quad += step[i] * info[i, j] * step[j]
    want_ll = quad > _CHECKED_STEP or lam > _LAMBDA_START
    if want_ll and not ll_valid:
        return _AGAIN, STATUS_NOT_CONVERGED, True, newton
    for i in range(N_PARAMS):
        trial[i] = min(max(theta[i] + step[i], lo[i]), hi[i])
    for i in range(IN, N_PARAMS):  # N, sigma, b shrink at most tenfold a step (no collapse onto a floor)
        trial[i] = max(trial[i], min(_MAX_SHRINK * theta[i], theta[i]))
    # Newton steps while local; Fisher's matrix again when the next check will likely pass
    # (Newton converges quadratically), so that the CRLB needs no extra evaluation
    near = abs(step[IX]) < _NEAR_XY_PX and abs(step[IY]) < _NEAR_XY_PX and abs(step[IN]) < _NEAR_N_REL * theta[IN]
    return _TRIAL, STATUS_NOT_CONVERGED, want_ll, not (want_ll or near)


@njit(cache=True, nogil=True)
def fit_roi(data, r2, sigma_init, init_row, max_iterations, work, crlb_out):
    """Fit the ROI in ``data`` (holding ``d'``); the parameters are left in ``work[2][0]``.

    Returns
    -------
    (log_likelihood_ratio, iterations, status)
        ``iterations`` counts the LM steps solved, the last (converged) one included.
    """
    _, axes, vecs, mats, edge, masks = work
    n = data.shape[0]
    theta, trial, step, diag, lo, hi = vecs[0], vecs[1], vecs[4], vecs[5], vecs[6], vecs[7]
    free, free_all = masks[0], masks[1]
    initial_guess(data, r2, sigma_init, init_row, edge, theta)
    half = 0.5 * n
    lo[IX], hi[IX] = theta[IX] - half, theta[IX] + half
    lo[IY], hi[IY] = theta[IY] - half, theta[IY] + half
    lo[IN], hi[IN] = PHOTONS_FLOOR, math.inf
    lo[IS], hi[IS] = SIGMA_MIN_PX, half
    lo[IB], hi[IB] = BACKGROUND_FLOOR, math.inf
    for i in range(N_PARAMS):  # element loops: slice copies cost numba seconds of compile time
        trial[i] = theta[i]
    cur = nxt = 0  # which gradient/matrix buffers hold the accepted point and the trial
    ll = -math.inf
    # flags start from a run-time bool: literal True/False would make numba compile callees twice
    ll_valid = want_ll = n > 0  # ll holds logL(theta) / compute logL in this evaluation
    newton = want_observed = not ll_valid  # the matrix at theta is the observed information / compute it
    axes_fresh = False  # axes hold the terms of theta
    phase = _TRIAL
    status = STATUS_NOT_CONVERGED
    lam = _LAMBDA_START
    iterations = 0
    while True:
        # the only evaluation site (each one more would add seconds of numba compile time)
        at_theta = phase != _TRIAL
        k = cur if at_theta else nxt
        ll_new = accumulate(data, r2, theta if at_theta else trial, axes, vecs[2 + k], mats[k],
                            want_ll, want_observed, at_theta and axes_fresh)
        axes_fresh = True
        if phase == _FINAL:
            newton = False
            break
        if phase == _AGAIN:
            newton = want_observed
            if want_ll:
                ll, ll_valid = ll_new, True
            iterations -= 1  # the same step is planned again
        elif math.isfinite(ll_new + mats[nxt, 0, 0] + mats[nxt, 1, 1] + mats[nxt, 3, 3]) and (
                not want_ll or ll_new >= ll - 1e-12 * (abs(ll) + 1.0)):
            for i in range(N_PARAMS):
                theta[i] = trial[i]
            cur = nxt
            ll, ll_valid, newton = ll_new, want_ll, want_observed
            lam = max(0.1 * lam, _LAMBDA_MIN) if iterations else lam
        elif iterations == 0:
            status = STATUS_NOT_FINITE
            break
        else:
            axes_fresh = False
            lam *= 10.0
        phase = _DONE
        if lam <= _LAMBDA_MAX and iterations < max_iterations:
            iterations += 1
            phase, status, want_ll, want_observed = plan_step(
                theta, vecs[2 + cur], mats[cur], lam, newton, ll_valid, lo, hi, free, mats[2], diag, step, trial)
            nxt = 1 - cur
        if phase == _DONE:
            if not newton:
                break
            phase, want_ll, want_observed = _FINAL, False, False  # the CRLB needs Fisher's matrix
    crlb_out[:] = math.nan
    for i in range(N_PARAMS):
        if not math.isfinite(theta[i]):
            status = STATUS_NOT_FINITE
    if status == STATUS_NOT_FINITE:
        return math.nan, iterations, status
    if not inverse_diagonal(mats[cur], free_all, mats[2], diag, crlb_out):
        crlb_out[:] = math.nan
        status = STATUS_SINGULAR
    for i in range(IN):  # x and y
        if theta[i] <= lo[i] or theta[i] >= hi[i]:
            status = STATUS_OUT_OF_BOUNDS
    return log_likelihood_ratio(data, r2, theta, axes, axes_fresh), iterations, status


@njit(cache=True, nogil=True)
def fit_spot(image, cx, cy, init_row, roi, sigma_init, r2, max_iterations, work, params_out, crlb_out):
    """Cut the ROI around ``(cx, cy)`` (frame px) out of ``image`` and fit it.

    The ROI is centred at ``round(centre)`` and shifted to lie inside the image;
    a centre more than ``roi / 2`` px outside the image is ``STATUS_ROI_OUTSIDE``.
    ``init_row`` is a (5,) warm start in frame coordinates (NaN entries: default)
    or empty. Writes ``params_out`` (frame coordinates) and ``crlb_out``; returns
    ``(log_likelihood_ratio, iterations, status)``.
    """
    data, vecs = work[0], work[2]
    height, width = image.shape
    params_out[:] = math.nan
    crlb_out[:] = math.nan
    if not (math.isfinite(cx) and math.isfinite(cy)):
        return math.nan, 0, STATUS_NOT_FINITE
    m = 0.5 * roi  # centres up to half a ROI outside the image still fit what is inside
    if height < roi or width < roi or not (-m <= cx <= width - 1 + m and -m <= cy <= height - 1 + m):
        return math.nan, 0, STATUS_ROI_OUTSIDE
    c0 = min(max(int(math.floor(cx + 0.5)) - roi // 2, 0), width - roi)
    r0 = min(max(int(math.floor(cy + 0.5)) - roi // 2, 0), height - roi)
    for r in range(roi):
        for c in range(roi):
            v = image[r0 + r, c0 + c] + r2
            if not math.isfinite(v):
                return math.nan, 0, STATUS_NOT_FINITE
            data[r, c] = max(v, 0.0)
    local = vecs[8]
    for i in range(N_PARAMS):
        local[i] = init_row[i] if init_row.shape[0] == N_PARAMS else math.nan
    local[IX] -= c0
    local[IY] -= r0
    ll, iterations, status = fit_roi(data, r2, sigma_init, local, max_iterations, work, crlb_out)
    for i in range(N_PARAMS):
        params_out[i] = vecs[0, i]
    params_out[IX] += c0
    params_out[IY] += r0
    return ll, iterations, status


@njit(cache=True, nogil=True)
def fit_spots_range(image, centers, initial, start, stop, roi, sigma_init, r2, max_iterations,
                    params_out, crlb_out, loglik_out, iterations_out, status_out):
    """Fit spots ``start..stop-1`` one after the other (see ``fit_spot``).

    ``centers`` (S, 2) frame px; ``initial`` (S, 5) warm starts or (0, 5) for none;
    outputs are (S, 5), (S, 5), (S,), (S,), (S,).
    """
    work = make_work(roi)
    no_init = np.empty(0)
    for s in range(start, stop):
        ll, it, st = fit_spot(image, centers[s, 0], centers[s, 1], initial[s] if initial.shape[0] else no_init,
                              roi, sigma_init, r2, max_iterations, work, params_out[s], crlb_out[s])
        loglik_out[s] = ll
        iterations_out[s] = it
        status_out[s] = st


@njit(cache=True, nogil=True, parallel=True)
def fit_spots_parallel(image, centers, initial, roi, sigma_init, r2, max_iterations,
                       params_out, crlb_out, loglik_out, iterations_out, status_out):
    """All spots, in blocks spread over numba's threads (same results as ``fit_spots_range``)."""
    n_spots = centers.shape[0]
    for block in prange((n_spots + _SPOTS_PER_BLOCK - 1) // _SPOTS_PER_BLOCK):
        start = block * _SPOTS_PER_BLOCK
        fit_spots_range(image, centers, initial, start, min(start + _SPOTS_PER_BLOCK, n_spots), roi, sigma_init,
                        r2, max_iterations, params_out, crlb_out, loglik_out, iterations_out, status_out)


@njit(cache=True, nogil=True)
def crlb_at(params, roi, r2, crlb_out):
    """CRLB variances (S, 5) of spots with given true ``params`` (S, 5), each in a ROI centred on it.

    Rows with non-finite parameters, ``N <= 0``, ``sigma <= 0`` or ``b + r2 <= 0``,
    or a singular Fisher matrix, get NaN.
    """
    data, axes, vecs, mats, _, masks = make_work(roi)
    no = roi < 0  # a run-time False (see fit_roi)
    data[:, :] = 0.0
    theta = vecs[0]
    for s in range(params.shape[0]):
        crlb_out[s] = math.nan
        for i in range(N_PARAMS):
            theta[i] = params[s, i]
        ok = math.isfinite(theta[IX] + theta[IY] + theta[IN] + theta[IS] + theta[IB])
        if not ok or theta[IN] <= 0.0 or theta[IS] <= 0.0 or theta[IB] + r2 <= 0.0:
            continue
        theta[IX] -= math.floor(theta[IX] + 0.5) - roi // 2
        theta[IY] -= math.floor(theta[IY] + 0.5) - roi // 2
        accumulate(data, r2, theta, axes, vecs[2], mats[0], no, no, no)
        if not inverse_diagonal(mats[0], masks[1], mats[2], vecs[5], crlb_out[s]):
            crlb_out[s] = math.nan
