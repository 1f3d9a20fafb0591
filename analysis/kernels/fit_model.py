"""Numba kernels: the pixel-integrated Gaussian, its Poisson log-likelihood derivatives and 5x5 algebra.

numpy, numba and math only. Model, in ROI-local coordinates (pixel ``(r, c)``
of the ROI has its centre at ``(x, y) = (c, r)``)::

    mu[r, c] = N * dEx[c] * dEy[r] + b
    dE(u; m, s) = 1/2 [erf((u - m + 1/2) / (sqrt(2) s)) - erf((u - m - 1/2) / (sqrt(2) s))]

The model is separable: one pass of ``axis_terms`` per axis (n + 1 erfc and exp
calls) gives the 1-D profiles and their derivatives; the 2-D sums then meet
the row factors once per row. Parameter order everywhere: ``(x, y, N, sigma, b)``
(px, px, photons, px, photons/px). sCMOS read noise (Huang et al. 2013): data
``d' = max(d + r2, 0)`` and model ``mu' = mu + r2`` are treated as Poisson.

Speed: numba reference-counts arrays with atomic instructions, for every
view (``a[k]``), tuple unpacking and array argument of a call that is not
inlined; in these small kernels that was about a third of the fit time, and the
counters are shared between threads. So no kernel here takes a view (work
arrays are passed whole with the row they use; the row layout is fixed below),
and kernels that allocate nothing are compiled with ``LEAN``: without the
reference counting (``_nrt=False``, as numba compiles its own hot helpers), so
they must never create or return an array.

Caching: numba's on-disk cache of ``fit`` is keyed on that file
alone and holds these kernels compiled in; after editing this module, touch
``fit.py`` too (or delete ``__pycache__``), or the fit keeps the old code.
"""

import math
from typing import Any

from numba import njit

# njit options of the kernels that allocate nothing (typed dict[str, Any]: numba's stub for njit
# names each option with its own type, and has no _nrt)
LEAN: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
# ... and of the per-pixel loops: fused multiply-add allowed (a * b + c rounded once). Only
# "contract": no reassociation (so no run-to-run or serial/parallel differences) and no
# finite-math assumptions (NaN checks stay valid). About a quarter off the pixel loop.
LEAN_FMA: dict[str, Any] = {**LEAN, "fastmath": {"contract"}}

N_PARAMS = 5
IX, IY, IN, IS, IB = 0, 1, 2, 3, 4

# rows of the (3, 5, 5) matrix work array: two information matrices, then the LDL factor
LOWER = 2
# rows of the (V_ROWS, 5) vector work array
V_STEP, V_DIAG, V_LO, V_HI, V_INIT, V_START, V_TMP = range(7)
V_ROWS = 7
# rows of the (A_ROWS, R) axis work array: x terms 0-4, y terms 5-9, the model of one row
A_MODEL = 10
A_ROWS = 11

PIVOT_MIN = 1e-12  # relative to the diagonal

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(**LEAN_FMA)
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


@njit(**LEAN_FMA)
def accumulate(data, r2, points, p, axes, grads, infos, k, with_ll, observed, fresh_axes):
    """Gradient and information matrix of the log-likelihood at ``theta = points[p]`` (ROI-local).

    ``data`` (R, R) holds ``d' = max(d + r2, 0)``; ``axes`` (A_ROWS, R) is work whose
    rows 0-4 / 5-9 hold the x / y ``axis_terms`` of ``theta`` afterwards (or
    before, if ``fresh_axes``). Writes ``grads[k] = d logL / d theta`` and
    ``infos[k]``: the Fisher information ``sum dmu dmu^T / mu'`` or, if
    ``observed``, the observed information ``-d2 logL = sum d' dmu dmu^T / mu'^2
    - (d'/mu' - 1) d2mu``. Returns ``sum d' ln mu' - mu'`` if ``with_ll`` (one
    logarithm per pixel), else 0.
    """
    n = data.shape[0]
    photons = points[p, IN]
    sigma = points[p, IS]
    inv_s = 1.0 / sigma
    bg = points[p, IB] + r2
    if not fresh_axes:
        axis_terms(n, points[p, IX], sigma, axes, 0)
        axis_terms(n, points[p, IY], sigma, axes, 5)
    gx = gy = gn = gs = gb = 0.0
    i00 = i01 = i02 = i03 = i04 = i11 = i12 = i13 = i14 = i22 = i23 = i24 = i33 = i34 = i44 = 0.0
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
            axes[A_MODEL, c] = axes[0, c] * ny + bg
        if with_ll:  # libm calls in a loop of their own keep the sums below in registers
            for c in range(n):
                m = axes[A_MODEL, c]
                ll += data[r, c] * math.log(m) - m
        tp = tq = tr = tu = tms = tss = 0.0
        pp = pq = pr = pu = qq = qr = qu = rr = ru = uu = 0.0
        for c in range(n):
            q = axes[0, c]
            pc = axes[1, c]
            s = axes[2, c]
            w = 1.0 / axes[A_MODEL, c]
            dw = data[r, c] * w
            t = dw - 1.0
            tp += t * pc
            tq += t * q
            tr += t * s
            tu += t
            if observed:
                tms += t * axes[3, c]
                tss += t * axes[4, c]
                w *= dw
            wp = w * pc
            wq = w * q
            wr = w * s
            pp += wp * pc
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
        gx += ny * tp
        gy += nd * tq
        gn += e * tq
        gs += ny * tr + ns * tq
        gb += tu
        i00 += ny * ny * pp
        i01 += ny * nd * pq
        i02 += ny * e * pq
        i03 += ny * (ny * pr + ns * pq)
        i04 += ny * pu
        i11 += nd * nd * qq
        i12 += nd * e * qq
        i13 += nd * sq
        i14 += nd * qu
        i22 += e * e * qq
        i23 += e * sq
        i24 += e * qu
        i33 += ny * ny * rr + 2.0 * ny * ns * qr + ns * ns * qq
        i34 += ny * ru + ns * qu
        i44 += uu
        if observed:  # minus sum t * d2mu; d2 dE/dmu2 = (d dE/dsigma) / sigma
            i00 -= ny * tr * inv_s
            i01 -= nd * tp
            i02 -= e * tp
            i03 -= ny * tms + ns * tp
            i11 -= ns * inv_s * tq
            i12 -= axes[6, r] * tq
            i13 -= nd * tr + photons * axes[8, r] * tq
            i23 -= e * tr + axes[7, r] * tq
            i33 -= ny * tss + 2.0 * ns * tr + photons * axes[9, r] * tq
    grads[k, IX] = gx
    grads[k, IY] = gy
    grads[k, IN] = gn
    grads[k, IS] = gs
    grads[k, IB] = gb
    infos[k, 0, 0] = i00
    infos[k, 0, 1] = infos[k, 1, 0] = i01
    infos[k, 0, 2] = infos[k, 2, 0] = i02
    infos[k, 0, 3] = infos[k, 3, 0] = i03
    infos[k, 0, 4] = infos[k, 4, 0] = i04
    infos[k, 1, 1] = i11
    infos[k, 1, 2] = infos[k, 2, 1] = i12
    infos[k, 1, 3] = infos[k, 3, 1] = i13
    infos[k, 1, 4] = infos[k, 4, 1] = i14
    infos[k, 2, 2] = i22
    infos[k, 2, 3] = infos[k, 3, 2] = i23
    infos[k, 2, 4] = infos[k, 4, 2] = i24
    infos[k, 3, 3] = i33
    infos[k, 3, 4] = infos[k, 4, 3] = i34
    infos[k, 4, 4] = i44
    return ll


@njit(**LEAN_FMA)
def log_likelihood_ratio(data, r2, points, p, axes, fresh_axes):
    """``sum d' ln(mu'/d') - (mu' - d')`` at ``points[p]``: the Poisson log-likelihood ratio to the
    saturated model (<= 0; minus twice it is the deviance). ``axes`` as in ``accumulate``."""
    n = data.shape[0]
    if not fresh_axes:
        axis_terms(n, points[p, IX], points[p, IS], axes, 0)
        axis_terms(n, points[p, IY], points[p, IS], axes, 5)
    bg = points[p, IB] + r2
    ll = 0.0
    for r in range(n):
        ny = points[p, IN] * axes[5, r]
        for c in range(n):
            m = axes[0, c] * ny + bg
            d = data[r, c]
            ll += d * math.log(m / d) - m + d if d > 0.0 else -m
    return ll


@njit(**LEAN)
def ldl_factor(mats, a, lam, free, f, vecs):
    """``LDL^T`` of ``mats[a] + lam * diag(mats[a])`` over the parameters free in ``free[f]`` (identity
    rows for the frozen).

    Writes the unit lower factor into ``mats[LOWER]`` and ``D`` into
    ``vecs[V_DIAG]``; returns False when the matrix is not numerically positive
    definite (a pivot below ``PIVOT_MIN`` times its diagonal entry, or
    non-finite entries).
    """
    for j in range(N_PARAMS):
        if not free[f, j]:
            vecs[V_DIAG, j] = 1.0
            for i in range(j + 1, N_PARAMS):
                mats[LOWER, i, j] = 0.0
            continue
        ajj = mats[a, j, j] * (1.0 + lam)
        d = ajj
        for k in range(j):
            d -= mats[LOWER, j, k] * mats[LOWER, j, k] * vecs[V_DIAG, k]
        if not (d > PIVOT_MIN * ajj and ajj < math.inf):
            return False
        vecs[V_DIAG, j] = d
        inv = 1.0 / d
        for i in range(j + 1, N_PARAMS):
            v = mats[a, i, j] if free[f, i] else 0.0
            for k in range(j):
                v -= mats[LOWER, i, k] * mats[LOWER, j, k] * vecs[V_DIAG, k]
            mats[LOWER, i, j] = v * inv
    return True


@njit(**LEAN)
def solve_step(mats, a, grads, g, lam, free, vecs):
    """LM step ``vecs[V_STEP]``: ``(M + lam diag M) step = grads[g]`` over the free parameters,
    ``M = mats[a]``; False if singular."""
    if not ldl_factor(mats, a, lam, free, 0, vecs):
        return False
    for i in range(N_PARAMS):
        v = grads[g, i] if free[0, i] else 0.0
        for k in range(i):
            v -= mats[LOWER, i, k] * vecs[V_STEP, k]
        vecs[V_STEP, i] = v
    for i in range(N_PARAMS - 1, -1, -1):
        v = vecs[V_STEP, i] / vecs[V_DIAG, i]
        for k in range(i + 1, N_PARAMS):
            v -= mats[LOWER, k, i] * vecs[V_STEP, k]
        vecs[V_STEP, i] = v
    return True


@njit(**LEAN)
def factored_variance(mats, vecs, i):
    """``(A^-1)[i, i]`` of the matrix ``A`` last factored by ``ldl_factor`` (free parameters only)."""
    # (A^-1)_ii = sum_k (L^-1)_ki^2 / D_k; column i of L^-1 by forward substitution
    total = 1.0 / vecs[V_DIAG, i]
    vecs[V_TMP, i] = 1.0
    for k in range(i + 1, N_PARAMS):
        v = 0.0
        for j in range(i, k):
            v -= mats[LOWER, k, j] * vecs[V_TMP, j]
        vecs[V_TMP, k] = v
        total += v * v / vecs[V_DIAG, k]
    return total


@njit(**LEAN)
def inverse_diagonal(mats, a, free, vecs, out, o):
    """Diagonal of ``mats[a]^-1`` (the CRLB variances) into ``out[o]``, float64; False if singular.

    ``free[1]`` must be all True; ``mats[LOWER]`` is overwritten by ``L^-1``.
    """
    if not ldl_factor(mats, a, 0.0, free, 1, vecs):
        return False
    for j in range(N_PARAMS):  # invert the unit lower factor in place
        for i in range(j + 1, N_PARAMS):
            v = -mats[LOWER, i, j]
            for k in range(j + 1, i):
                v -= mats[LOWER, i, k] * mats[LOWER, k, j]
            mats[LOWER, i, j] = v
    for i in range(N_PARAMS):
        total = 1.0 / vecs[V_DIAG, i]
        for k in range(i + 1, N_PARAMS):
            total += mats[LOWER, k, i] * mats[LOWER, k, i] / vecs[V_DIAG, k]
        out[o, i] = total
    return True
