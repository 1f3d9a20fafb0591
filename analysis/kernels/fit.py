"""Numba kernels: per-spot Poisson-MLE fit of the pixel-integrated Gaussian, with CRLB (numpy, numba and math only).

The model, its likelihood derivatives and the 5x5 algebra are in
``fit_model``; this module is the optimizer and the per-spot drivers.
Parameter order everywhere: ``(x, y, N, sigma, b)`` (px, px, photons, px,
photons/px).

Optimizer: Levenberg-Marquardt over all five parameters. Far from the optimum
(a step with ``step^T M step > 1``, i.e. beyond the statistical error) it uses
Fisher scoring, ``M = F = sum dmu dmu^T / mu'`` (positive definite everywhere),
and checks each step against the log-likelihood. Close to it, steps are exact
Newton steps on the observed information ``-d2 logL`` (quadratic convergence),
taken without the per-pixel logarithms. The last evaluation uses ``F`` again,
the Fisher information of the CRLB. Box constraints: clamping, and parameters
on a bound with the gradient pointing outwards are frozen for the step.

Convergence: a planned step below ``TOL_XY_PX`` in x and y and ``TOL_N_REL`` in
N, or below ``TOL_STEP_SE`` standard errors (``step^T M step < TOL_STEP_SE^2``,
which bounds every parameter's step by that many of its standard errors). The
step is not taken, so the result is within it of the optimum.

No signal: a pure-background ROI (a blinking particle that is OFF) has no
optimum to converge to (x, y, sigma are not identifiable as N -> 0), and the
fit would wander to ``max_iterations``. It stops at once when, at an accepted
point, the photons are pushed onto their floor or they stay below
``no_signal_snr`` standard errors (``N`` and ``N + step_N`` both below
``no_signal_snr * sqrt((M^-1)_NN)``); a converged fit whose photons are below
that many CRLB standard errors ends the same way. Such a spot gets
``STATUS_NO_SIGNAL`` and the fit of the no-spot model (``null_outcome``). A fit
in a bad place (a warm start pixels off, the background absorbing the spot)
can look like that too, so the data have a veto, computed only when a rule
fires: if some 3x3 box of the ROI holds more than ``PEAK_VETO_Z`` standard
errors above the ROI mean (``peak_excess``), the rules are off for this spot.
"""

import math

import numpy as np
from numba import njit, prange

from plstream.analysis.kernels.fit_model import (
    A_MODEL,
    A_ROWS,
    IB,
    IN,
    IS,
    IX,
    IY,
    LEAN,
    N_PARAMS,
    V_HI,
    V_INIT,
    V_LO,
    V_ROWS,
    V_START,
    V_STEP,
    accumulate,
    axis_terms,
    factored_variance,
    inverse_diagonal,
    log_likelihood_ratio,
    solve_step,
)

# status codes (int8), explained by fit.FitStatus
(
    STATUS_OK,
    STATUS_NOT_CONVERGED,
    STATUS_OUT_OF_BOUNDS,
    STATUS_NOT_FINITE,
    STATUS_ROI_OUTSIDE,
    STATUS_SINGULAR,
    STATUS_NO_SIGNAL,
) = range(7)

SIGMA_MIN_PX = 0.3
PHOTONS_FLOOR = 1e-3
BACKGROUND_FLOOR = 1e-3
TOL_XY_PX = 1e-4
TOL_N_REL = 1e-5
TOL_STEP_SE = 0.01
NO_SIGNAL_SNR = 2.0  # default of fit.fit_spots(no_signal_snr=...)
PEAK_VETO_Z = 4.0  # a 3x3 box this many standard errors above the ROI mean: the ROI has a spot
_NEAR_XY_PX = 10.0 * TOL_XY_PX  # a Newton step this small converges with the next one
_NEAR_N_REL = 10.0 * TOL_N_REL
_NEAR_STEP_SE = 0.1
_MAX_SHRINK = 0.1
_CHECKED_STEP = 1.0  # steps with step^T F step above this are checked against the log-likelihood
_LAMBDA_START = 1e-3
_LAMBDA_MIN = 1e-7
_LAMBDA_MAX = 1e10
_SPOTS_PER_BLOCK = 16
_TRIAL, _AGAIN, _FINAL, _DONE = 0, 1, 2, 3  # what fit_roi does next
P_THETA, P_TRIAL = 0, 1  # rows of the (2, 5) point work array: the accepted point and the trial


@njit(cache=True, nogil=True)
def make_work(roi):
    """Work arrays for one thread: ``(data, axes, points, grads, mats, vecs, edge, free)``.

    ``data`` (R, R) the ROI's ``d'``; ``axes`` (A_ROWS, R) 1-D profiles; ``points``
    (2, 5) accepted point and trial; ``grads`` (2, 5) and ``mats[0:2]`` their
    gradients and information matrices, ``mats[LOWER]`` the LDL factor; ``vecs``
    (V_ROWS, 5) step, pivots, bounds, warm start, start; ``edge`` (4R,) border
    pixels; ``free`` (2, 5) the parameters free in this step, and all True.
    """
    free = np.ones((2, N_PARAMS), dtype=np.bool_)
    return (
        np.empty((roi, roi)),
        np.empty((A_ROWS, roi)),
        np.empty((2, N_PARAMS)),
        np.empty((2, N_PARAMS)),
        np.empty((3, N_PARAMS, N_PARAMS)),
        np.empty((V_ROWS, N_PARAMS)),
        np.empty(4 * roi),
        free,
    )


@njit(**LEAN)
def initial_guess(data, r2, sigma_init, vecs, edge, points):
    """Start values (ROI-local) into ``points[P_THETA]`` from the warm start ``vecs[V_INIT]`` and the data.

    Each NaN (or out-of-range) warm-start entry falls back to its default:
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
    init_b = vecs[V_INIT, IB]
    if math.isfinite(init_b) and init_b > 0.0:
        bg = init_b
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
    x = sx / total if total > 0.0 else 0.5 * (n - 1)
    y = sy / total if total > 0.0 else 0.5 * (n - 1)
    init_x, init_y, init_n, init_s = vecs[V_INIT, IX], vecs[V_INIT, IY], vecs[V_INIT, IN], vecs[V_INIT, IS]
    if math.isfinite(init_x) and -0.5 <= init_x <= n - 0.5:
        x = init_x
    if math.isfinite(init_y) and -0.5 <= init_y <= n - 0.5:
        y = init_y
    points[P_THETA, IX] = x
    points[P_THETA, IY] = y
    points[P_THETA, IN] = init_n if math.isfinite(init_n) and init_n > 0.0 else max(net, 1.0)
    sigma = init_s if math.isfinite(init_s) and init_s > 0.0 else sigma_init
    points[P_THETA, IS] = min(max(sigma, SIGMA_MIN_PX), 0.5 * n)
    points[P_THETA, IB] = bg


@njit(**LEAN)
def peak_excess(data, axes):
    """Largest 3x3 box sum of ``d'`` above the ROI mean, in standard errors of a flat Poisson ROI.

    ``max (S_box - 9 m) / sqrt(9 m)`` over the boxes inside the ROI, ``m`` =
    mean ``d'``: a model-free check that the ROI holds a spot (~12 for 200
    photons on 10 photons/px, sigma 1.3 px; a pure-background ROI rarely
    passes 3.5). ``axes[A_MODEL]`` is overwritten (column sums of 3 rows).
    """
    n = data.shape[0]
    total = 0.0
    for r in range(n):
        for c in range(n):
            total += data[r, c]
    expected = 9.0 * total / (n * n)
    if not expected > 0.0:
        return 0.0
    best = -math.inf
    for r in range(n - 2):
        for c in range(n):
            axes[A_MODEL, c] = data[r, c] + data[r + 1, c] + data[r + 2, c]
        for c in range(n - 2):
            best = max(best, axes[A_MODEL, c] + axes[A_MODEL, c + 1] + axes[A_MODEL, c + 2])
    return (best - expected) / math.sqrt(expected)


@njit(**LEAN)
def plan_step(points, grads, mats, cur, lam, newton, ll_valid, vecs, free, no_signal_snr):
    """Plan one LM step from ``points[P_THETA]`` given its gradient and information ``grads[cur], mats[cur]``.

    Returns ``(phase, status, want_ll, want_observed)``: ``_TRIAL``
    (``points[P_TRIAL]`` is written; evaluate it), ``_AGAIN`` (evaluate the
    accepted point again: with the log-likelihood before a large step, or
    Fisher's matrix where the observed information is not positive definite)
    or ``_DONE`` (``STATUS_OK``, ``STATUS_NO_SIGNAL`` or ``STATUS_SINGULAR``).
    ``no_signal_snr < 0`` turns the no-signal rules off.
    """
    for i in range(N_PARAMS):
        t, g = points[P_THETA, i], grads[cur, i]
        free[0, i] = not ((t <= vecs[V_LO, i] and g < 0.0) or (t >= vecs[V_HI, i] and g > 0.0))
    if no_signal_snr >= 0.0 and not free[0, IN]:  # the photons are pushed onto their floor
        return _DONE, STATUS_NO_SIGNAL, False, False
    if not solve_step(mats, cur, grads, cur, lam, free, vecs):
        if newton:
            return _AGAIN, STATUS_NOT_CONVERGED, False, False
        return _DONE, STATUS_SINGULAR, False, False
    photons = points[P_THETA, IN]
    d_x, d_y, d_n = vecs[V_STEP, IX], vecs[V_STEP, IY], vecs[V_STEP, IN]
    top = max(photons, photons + d_n)
    if no_signal_snr > 0.0 and top * top < no_signal_snr * no_signal_snr * factored_variance(mats, vecs, IN):
        return _DONE, STATUS_NO_SIGNAL, False, False
    quad = 0.0
    for i in range(N_PARAMS):
        for j in range(N_PARAMS):
            quad += vecs[V_STEP, i] * mats[cur, i, j] * vecs[V_STEP, j]
    small = abs(d_x) < TOL_XY_PX and abs(d_y) < TOL_XY_PX and abs(d_n) < TOL_N_REL * photons
    if lam <= 1e-2 and (small or quad < TOL_STEP_SE * TOL_STEP_SE):
        return _DONE, STATUS_OK, False, False
    want_ll = quad > _CHECKED_STEP or lam > _LAMBDA_START
    if want_ll and not ll_valid:
        return _AGAIN, STATUS_NOT_CONVERGED, True, newton
    for i in range(N_PARAMS):
        points[P_TRIAL, i] = min(max(points[P_THETA, i] + vecs[V_STEP, i], vecs[V_LO, i]), vecs[V_HI, i])
    for i in range(IN, N_PARAMS):  # N, sigma, b shrink at most tenfold a step (no collapse onto a floor)
        t = points[P_THETA, i]
        points[P_TRIAL, i] = max(points[P_TRIAL, i], min(_MAX_SHRINK * t, t))
    # Newton steps while local; Fisher's matrix again when the next check will likely pass
    # (Newton converges quadratically), so that the CRLB needs no extra evaluation
    near = (
        abs(d_x) < _NEAR_XY_PX and abs(d_y) < _NEAR_XY_PX and abs(d_n) < _NEAR_N_REL * photons
    ) or quad < _NEAR_STEP_SE * _NEAR_STEP_SE
    return _TRIAL, STATUS_NOT_CONVERGED, want_ll, not (want_ll or near)


@njit(**LEAN)
def null_outcome(data, r2, points, axes, vecs, crlb_out, o):
    """The no-spot model of a ``STATUS_NO_SIGNAL`` ROI into ``points[P_THETA]``; returns its log-likelihood ratio.

    ``b`` = its maximum-likelihood estimate ``mean(d') - r2`` (at least the floor),
    ``N = 0``, and ``x, y, sigma`` = the start values (``vecs[V_START]``: where the
    spot was looked for). ``crlb_out[o]``: ``N`` and ``b`` variances from the 2x2
    Fisher matrix of ``(N, b)`` at ``N = 0`` (so ``sqrt(crlb_N)`` is the photon
    count of one standard error at that position), ``inf`` for x, y and sigma
    (no information about them without photons).
    """
    n = data.shape[0]
    total = 0.0
    for r in range(n):
        for c in range(n):
            total += data[r, c]
    bg1 = max(total / (n * n), r2 + BACKGROUND_FLOOR)  # mu' of the flat model
    for i in range(N_PARAMS):
        points[P_THETA, i] = vecs[V_START, i]
    points[P_THETA, IN] = 0.0
    points[P_THETA, IB] = bg1 - r2
    axis_terms(n, points[P_THETA, IX], points[P_THETA, IS], axes, 0)
    axis_terms(n, points[P_THETA, IY], points[P_THETA, IS], axes, 5)
    sx = sxx = sy = syy = 0.0
    for j in range(n):
        sx += axes[0, j]
        sxx += axes[0, j] * axes[0, j]
        sy += axes[5, j]
        syy += axes[5, j] * axes[5, j]
    f_nn, f_nb, f_bb = sxx * syy / bg1, sx * sy / bg1, n * n / bg1
    det = f_nn * f_bb - f_nb * f_nb
    crlb_out[o, IX] = crlb_out[o, IY] = crlb_out[o, IS] = math.inf
    crlb_out[o, IN] = f_bb / det if det > 0.0 else math.inf
    crlb_out[o, IB] = f_nn / det if det > 0.0 else bg1 / (n * n)
    fresh = n > 0  # a run-time True (see fit_roi)
    return log_likelihood_ratio(data, r2, points, P_THETA, axes, fresh)


@njit(**LEAN)
def fit_roi(
    data, r2, sigma_init, max_iterations, no_signal_snr, axes, points, grads, mats, vecs, edge, free, crlb_out, o
):
    """Fit the ROI in ``data`` (holding ``d'``), the warm start in ``vecs[V_INIT]``.

    The parameters are left in ``points[P_THETA]`` (ROI-local) and the CRLB in
    ``crlb_out[o]``.

    Returns
    -------
    (log_likelihood_ratio, iterations, status)
        ``iterations`` counts the LM steps solved, the last (converged) one included.
    """
    n = data.shape[0]
    initial_guess(data, r2, sigma_init, vecs, edge, points)
    half = 0.5 * n
    vecs[V_LO, IX], vecs[V_HI, IX] = points[P_THETA, IX] - half, points[P_THETA, IX] + half
    vecs[V_LO, IY], vecs[V_HI, IY] = points[P_THETA, IY] - half, points[P_THETA, IY] + half
    vecs[V_LO, IN], vecs[V_HI, IN] = PHOTONS_FLOOR, math.inf
    vecs[V_LO, IS], vecs[V_HI, IS] = SIGMA_MIN_PX, half
    vecs[V_LO, IB], vecs[V_HI, IB] = BACKGROUND_FLOOR, math.inf
    for i in range(N_PARAMS):
        points[P_TRIAL, i] = vecs[V_START, i] = points[P_THETA, i]
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
        ll_new = accumulate(
            data,
            r2,
            points,
            P_THETA if at_theta else P_TRIAL,
            axes,
            grads,
            mats,
            k,
            want_ll,
            want_observed,
            at_theta and axes_fresh,
        )
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
            not want_ll or ll_new >= ll - 1e-12 * (abs(ll) + 1.0)
        ):
            for i in range(N_PARAMS):
                points[P_THETA, i] = points[P_TRIAL, i]
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
                points, grads, mats, cur, lam, newton, ll_valid, vecs, free, no_signal_snr
            )
            if status == STATUS_NO_SIGNAL and peak_excess(data, axes) >= PEAK_VETO_Z:
                no_signal_snr = -1.0  # the data veto: a spot is there, the rules are off for this ROI
                phase, status, want_ll, want_observed = plan_step(
                    points, grads, mats, cur, lam, newton, ll_valid, vecs, free, no_signal_snr
                )
            nxt = 1 - cur
        if phase == _DONE:
            if not newton or status == STATUS_NO_SIGNAL:
                break
            phase, want_ll, want_observed = _FINAL, False, False  # the CRLB needs Fisher's matrix
    for i in range(N_PARAMS):
        crlb_out[o, i] = math.nan
        if not math.isfinite(points[P_THETA, i]):
            status = STATUS_NOT_FINITE
    if status == STATUS_NOT_FINITE:
        return math.nan, iterations, status
    if status == STATUS_NO_SIGNAL:
        return null_outcome(data, r2, points, axes, vecs, crlb_out, o), iterations, status
    if not inverse_diagonal(mats, cur, free, vecs, crlb_out, o):
        for i in range(N_PARAMS):
            crlb_out[o, i] = math.nan
        status = STATUS_SINGULAR
    for i in range(IN):  # x and y
        if points[P_THETA, i] <= vecs[V_LO, i] or points[P_THETA, i] >= vecs[V_HI, i]:
            status = STATUS_OUT_OF_BOUNDS
    photons = points[P_THETA, IN]
    if (
        status != STATUS_SINGULAR
        and no_signal_snr > 0.0
        and photons * photons < no_signal_snr * no_signal_snr * crlb_out[o, IN]
        and peak_excess(data, axes) < PEAK_VETO_Z
    ):
        return null_outcome(data, r2, points, axes, vecs, crlb_out, o), iterations, STATUS_NO_SIGNAL
    return log_likelihood_ratio(data, r2, points, P_THETA, axes, axes_fresh), iterations, status


@njit(**LEAN)
def fit_spot(
    image,
    centers,
    initial,
    s,
    roi,
    sigma_init,
    r2,
    max_iterations,
    no_signal_snr,
    data,
    axes,
    points,
    grads,
    mats,
    vecs,
    edge,
    free,
    params_out,
    crlb_out,
):
    """Cut the ROI around ``centers[s]`` (frame px) out of ``image`` and fit it.

    The ROI is centred at ``round(centre)`` and shifted to lie inside the image;
    a centre more than ``roi / 2`` px outside the image is ``STATUS_ROI_OUTSIDE``.
    ``initial`` is (S, 5) warm starts in frame coordinates (NaN entries: default)
    or (0, 5). Writes ``params_out[s]`` (frame coordinates) and ``crlb_out[s]``;
    returns ``(log_likelihood_ratio, iterations, status)``.
    """
    height, width = image.shape
    cx, cy = centers[s, 0], centers[s, 1]
    for i in range(N_PARAMS):
        params_out[s, i] = crlb_out[s, i] = math.nan
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
    for i in range(N_PARAMS):
        vecs[V_INIT, i] = initial[s, i] if initial.shape[0] else math.nan
    vecs[V_INIT, IX] -= c0
    vecs[V_INIT, IY] -= r0
    ll, iterations, status = fit_roi(
        data, r2, sigma_init, max_iterations, no_signal_snr, axes, points, grads, mats, vecs, edge, free, crlb_out, s
    )
    for i in range(N_PARAMS):
        params_out[s, i] = points[P_THETA, i]
    params_out[s, IX] += c0
    params_out[s, IY] += r0
    return ll, iterations, status


@njit(cache=True, nogil=True)
def fit_spots_range(
    image,
    centers,
    initial,
    start,
    stop,
    roi,
    sigma_init,
    r2,
    max_iterations,
    no_signal_snr,
    params_out,
    crlb_out,
    loglik_out,
    iterations_out,
    status_out,
):
    """Fit spots ``start..stop-1`` one after the other (see ``fit_spot``).

    ``centers`` (S, 2) frame px; ``initial`` (S, 5) warm starts or (0, 5) for none;
    outputs are (S, 5), (S, 5), (S,), (S,), (S,). Allocates one set of work
    arrays; nothing in the per-spot loop allocates or takes an array view.
    """
    data, axes, points, grads, mats, vecs, edge, free = make_work(roi)
    for s in range(start, stop):
        ll, it, st = fit_spot(
            image,
            centers,
            initial,
            s,
            roi,
            sigma_init,
            r2,
            max_iterations,
            no_signal_snr,
            data,
            axes,
            points,
            grads,
            mats,
            vecs,
            edge,
            free,
            params_out,
            crlb_out,
        )
        loglik_out[s] = ll
        iterations_out[s] = it
        status_out[s] = st


@njit(cache=True, nogil=True, parallel=True)
def fit_spots_parallel(
    image,
    centers,
    initial,
    roi,
    sigma_init,
    r2,
    max_iterations,
    no_signal_snr,
    params_out,
    crlb_out,
    loglik_out,
    iterations_out,
    status_out,
):
    """All spots, in blocks spread over numba's threads.

    Bit-identical to ``fit_spots_range``: each spot's fit is the same code on
    its own data, with no reduction across spots and no fast-math reordering.
    """
    n_spots = centers.shape[0]
    for block in prange((n_spots + _SPOTS_PER_BLOCK - 1) // _SPOTS_PER_BLOCK):
        start = block * _SPOTS_PER_BLOCK
        fit_spots_range(
            image,
            centers,
            initial,
            start,
            min(start + _SPOTS_PER_BLOCK, n_spots),
            roi,
            sigma_init,
            r2,
            max_iterations,
            no_signal_snr,
            params_out,
            crlb_out,
            loglik_out,
            iterations_out,
            status_out,
        )


@njit(cache=True, nogil=True)
def crlb_at(params, roi, r2, crlb_out):
    """CRLB variances (S, 5) of spots with given true ``params`` (S, 5), each in a ROI centred on it.

    Rows with non-finite parameters, ``N <= 0``, ``sigma <= 0`` or ``b + r2 <= 0``,
    or a singular Fisher matrix, get NaN.
    """
    data, axes, points, grads, mats, vecs, _, free = make_work(roi)
    no = roi < 0  # a run-time False (see fit_roi)
    data[:, :] = 0.0
    for s in range(params.shape[0]):
        for i in range(N_PARAMS):
            crlb_out[s, i] = math.nan
            points[0, i] = params[s, i]
        ok = math.isfinite(points[0, IX] + points[0, IY] + points[0, IN] + points[0, IS] + points[0, IB])
        if not ok or points[0, IN] <= 0.0 or points[0, IS] <= 0.0 or points[0, IB] + r2 <= 0.0:
            continue
        points[0, IX] -= math.floor(points[0, IX] + 0.5) - roi // 2
        points[0, IY] -= math.floor(points[0, IY] + 0.5) - roi // 2
        accumulate(data, r2, points, 0, axes, grads, mats, 0, no, no, no)
        if not inverse_diagonal(mats, 0, free, vecs, crlb_out, s):
            for i in range(N_PARAMS):
                crlb_out[s, i] = math.nan
