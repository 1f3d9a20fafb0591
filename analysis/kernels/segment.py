"""Numba kernels of the change-point segmentation of intensity traces (numpy, numba and math only).

A trace x (photons) with noise variance ``a + g * level`` (photometric OFF
noise ``a``, shot noise ``g`` per photon of level) is first made
homoscedastic by the generalized Anscombe transform
``y = 2 / sqrt(g) * sqrt(max(x + a / g, 0))`` (variance about 1 at every
level). The cost of a segment is then its residual sum of squares in y
(minus twice its Gaussian log-likelihood, constants dropped), and each change
point costs ``penalty`` (a BIC-like model-selection term). The segmentation
minimizing the total is found by PELT (Killick, Fearnhead & Eckley, JASA
2012) with the candidate set capped (the least promising candidates older
than the newest few are dropped), which keeps the work per frame bounded
through long quiet stretches.
"""

import math

from numba import njit

from plstream.analysis.kernels.shared import select_kth

_Q25_CHI2_1 = 0.10153104426762158  # lower quartile of a chi-square variable with one degree of freedom
_PROTECTED = 12  # the newest candidates are never dropped by the cap


@njit(cache=True, nogil=True)
def anscombe(x, n, a, g, y):
    """``y[:n]`` = the generalized Anscombe transform of ``x[:n]`` for variance ``a + g * x`` (variance ~1)."""
    c = a / g
    k = 2.0 / math.sqrt(g)
    for i in range(n):
        y[i] = k * math.sqrt(max(x[i] + c, 0.0))


@njit(cache=True, nogil=True)
def segment_cost(cs1, cs2, s, t):
    """Residual sum of squares of the segment of frames ``s .. t-1`` from cumulative sums (length n+1)."""
    m = t - s
    s1 = cs1[t] - cs1[s]
    return max(cs2[t] - cs2[s] - s1 * s1 / m, 0.0)


@njit(cache=True, nogil=True)
def pelt(y, n, penalty, max_candidates, cs1, cs2, best, back, cand, cps_out):
    """Change points of ``y[:n]`` (PELT, unit noise variance); returns how many were written to ``cps_out``.

    Parameters
    ----------
    y : (>= n,) float64
        The transformed trace (variance ~1); no NaN in ``y[:n]``.
    penalty : float
        Cost of one change point.
    max_candidates : int
        Most candidate change points kept (> the 12 newest, which are never dropped).
    cs1, cs2, best : (>= n+1,) float64; back, cand : (>= n+1,) int64
        Work buffers.
    cps_out : (>= n,) int64
        Written: the first frame of every segment after the first, ascending.
    """
    cs1[0] = 0.0
    cs2[0] = 0.0
    for i in range(n):
        cs1[i + 1] = cs1[i] + y[i]
        cs2[i + 1] = cs2[i] + y[i] * y[i]
    best[0] = -penalty
    back[0] = 0
    cand[0] = 0
    n_cand = 1
    for t in range(1, n + 1):
        lowest = math.inf
        arg = 0
        for k in range(n_cand):
            s = cand[k]
            value = best[s] + segment_cost(cs1, cs2, s, t) + penalty
            if value < lowest:
                lowest = value
                arg = s
        best[t] = lowest
        back[t] = arg
        kept = 0
        for k in range(n_cand):
            s = cand[k]
            if best[s] + segment_cost(cs1, cs2, s, t) <= lowest:
                cand[kept] = s
                kept += 1
        cand[kept] = t
        n_cand = kept + 1
        if n_cand > max_candidates:  # drop the least promising of the older candidates
            worst = -math.inf
            at = 0
            for k in range(n_cand - _PROTECTED):
                s = cand[k]
                value = best[s] + segment_cost(cs1, cs2, s, t)
                if value > worst:
                    worst = value
                    at = k
            for k in range(at, n_cand - 1):
                cand[k] = cand[k + 1]
            n_cand -= 1
    count = 0
    t = n
    while t > 0:
        s = back[t]
        if s > 0:
            cps_out[count] = s
            count += 1
        t = s
    for i in range(count // 2):
        cps_out[i], cps_out[count - 1 - i] = cps_out[count - 1 - i], cps_out[i]
    return count


@njit(cache=True, nogil=True)
def noise_model(x, causal, n, scratch, scratch2, fallback_a, fallback_g, out):
    """Robust noise model of one trace from frame-to-frame differences: ``out = [a, g]``.

    ``a`` (photons², OFF variance) from the pairs of consecutive frames both OFF
    by the causal state (``causal == 0``), ``g`` (photons of variance per photon
    of level) from the pairs both ON, each from the lower quartile of the
    squared differences: robust to the pairs that straddle a switch, and to a
    particle that blinks faster than the frames (its partly-on frames would
    inflate a mean or a median). With fewer
    than 8 pairs of a kind, the fallbacks stand in (``g`` = 1: Poisson photons).
    """
    n_off = 0
    n_on = 0
    for i in range(1, n):
        if not (math.isfinite(x[i]) and math.isfinite(x[i - 1])):
            continue
        d = x[i] - x[i - 1]
        if causal[i] == 0 and causal[i - 1] == 0:
            scratch[n_off] = d * d
            n_off += 1
        elif causal[i] == 1 and causal[i - 1] == 1:
            scratch2[2 * n_on] = d * d
            scratch2[2 * n_on + 1] = 0.5 * (x[i] + x[i - 1])
            n_on += 1
    a = fallback_a
    if n_off >= 8:
        a = select_kth(scratch, n_off, n_off // 4) / (2.0 * _Q25_CHI2_1)
    g = fallback_g
    if n_on >= 8:
        for k in range(n_on):
            scratch[k] = scratch2[2 * k]
        v_on = select_kth(scratch, n_on, n_on // 4) / (2.0 * _Q25_CHI2_1)
        for k in range(n_on):
            scratch[k] = scratch2[2 * k + 1]
        level = select_kth(scratch, n_on, n_on // 2)
        if level > 0.0:
            if n_off < 8 and not math.isfinite(a):
                a = max(v_on - level, 0.05 * v_on)
            g = min(max((v_on - a) / level, 0.05), 50.0)
    if not math.isfinite(a) or a <= 0.0:
        a = 1.0
    out[0] = a
    out[1] = g


@njit(cache=True, nogil=True)
def _emit(seg_out, n_out, i, start, stop, row, starts_piece, rss, final):
    s1 = 0.0
    for t in range(start, stop):
        s1 += row[t]
    seg_out[n_out, 0] = i
    seg_out[n_out, 1] = start
    seg_out[n_out, 2] = stop - start
    seg_out[n_out, 3] = s1
    seg_out[n_out, 4] = 1.0 if starts_piece else 0.0
    seg_out[n_out, 5] = rss
    seg_out[n_out, 6] = 1.0 if final else 0.0


@njit(cache=True, nogil=True)
def segment_spots(
    window,
    causal,
    piece,
    begin,
    cont,
    n_frames,
    lag,
    max_window,
    final,
    penalty,
    max_candidates,
    noise,
    work_f,
    work_i,
    scratch,
    scratch2,
    seg_out,
    first_spot,
):
    """Segment each spot's open window; report its segments and which of them are final now.

    For spot i the open window is ``window[i, begin[i]:n_frames]`` (columns are
    frames of the window buffer). A segment is final once the next one starts
    at least ``lag`` frames before the window's end, once its piece of the
    trace has ended (a NaN frame or a gap follows), or at the end of the run
    (``final``). A window longer than ``max_window`` frames without such a
    change point is cut at ``n_frames - lag`` (the next window continues the
    segment). Segments never span a NaN frame or a frame with ``piece[t] == 1``
    (the first frame after a gap in the stream).

    Parameters
    ----------
    begin : (S,) int64
        Updated in place: where each spot's open window starts.
    cont : (S,) int8
        Updated in place: 1 when the spot's next segment continues its last
        final one (no NaN frame or gap between them).
    noise : (S, 2) float64
        ``[a, g]`` per spot, updated in place (kept when the window has too few pairs).
    work_f : (4, >= W+1) float64, work_i : (3, >= W+1) int64, scratch : (>= W,) float64,
    scratch2 : (>= 2W,) float64
        Work buffers (W = the window buffer's width).
    seg_out : (K, 7) float64
        Written: rows ``[spot, first column, frames, sum of x, starts_piece,
        rss, final]``, the segments of each open window in order (``rss``: the
        residual sum of squares of the transformed values, about ``frames - 1``
        for a segment of truly constant level).
    first_spot : int
        The spot to start with (spots before it are left alone).

    Returns
    -------
    (int, int)
        Rows written to ``seg_out``, and the spot to start the next call with:
        ``window.shape[0]`` when every spot was done, less when ``seg_out``
        filled up first (call again from there).
    """
    n_out = 0
    n_seg_max = seg_out.shape[0]
    cs1 = work_f[0]
    cs2 = work_f[1]
    best = work_f[2]
    transformed = work_f[3]
    back = work_i[0]
    cand = work_i[1]
    cps = work_i[2]
    for i in range(first_spot, window.shape[0]):
        row = window[i]
        b = begin[i]
        c = cont[i]
        while b < n_frames and not math.isfinite(row[b]):
            b += 1
            c = 0
        if b >= n_frames:
            begin[i] = b
            cont[i] = c
            continue
        if n_out + n_frames - b + 1 > n_seg_max:
            return n_out, i
        begin[i] = b
        cont[i] = c
        noise_model(row[b:], causal[i, b:], n_frames - b, scratch, scratch2, noise[i, 0], noise[i, 1], noise[i])
        a = noise[i, 0]
        g = noise[i, 1]
        limit = n_frames if final else n_frames - lag
        start = b
        cut = b
        settled = True  # every segment so far is final
        while True:
            while start < n_frames and not math.isfinite(row[start]):
                start += 1
                if settled:
                    cut = start
                    c = 0
            if start >= n_frames:
                break
            stop = start + 1
            while stop < n_frames and math.isfinite(row[stop]) and piece[stop] == 0:
                stop += 1
            if piece[start] == 1 and settled:
                c = 0
            m = stop - start
            anscombe(row[start:], m, a, g, transformed)
            k = pelt(transformed, m, penalty, max_candidates, cs1, cs2, best, back, cand, cps)
            seg_start = start
            for j in range(k + 1):
                seg_stop = start + cps[j] if j < k else stop
                done = settled and ((seg_stop <= limit) if j < k else (stop < n_frames or final))
                rss = segment_cost(cs1, cs2, seg_start - start, seg_stop - start)
                _emit(seg_out, n_out, i, seg_start, seg_stop, row, seg_start == start and c == 0, rss, done)
                n_out += 1
                if done:
                    c = 1
                    cut = seg_stop
                else:
                    settled = False
                seg_start = seg_stop
            start = stop
        if not final and n_frames - cut > max_window:
            # a long quiet stretch: the segment at the cut is final up to the lag (the next window goes on with it)
            forced = n_frames - lag
            for r in range(n_out - 1, -1, -1):
                if seg_out[r, 0] != i or seg_out[r, 6] > 0.5:
                    break
                if seg_out[r, 1] == cut and seg_out[r, 1] + seg_out[r, 2] > forced > cut:
                    # split the open segment at the forced cut; the first part is final
                    whole = seg_out[r, 2]
                    rss = seg_out[r, 5]
                    _emit(seg_out, r, i, cut, forced, row, seg_out[r, 4] > 0.5, rss * (forced - cut) / whole, True)
                    for q in range(n_out, r + 1, -1):
                        for col in range(7):
                            seg_out[q, col] = seg_out[q - 1, col]
                    _emit(
                        seg_out,
                        r + 1,
                        i,
                        forced,
                        cut + int(whole),
                        row,
                        False,
                        rss * (cut + whole - forced) / whole,
                        False,
                    )
                    n_out += 1
                    c = 1
                    cut = forced
                    break
        begin[i] = cut
        cont[i] = c
    return n_out, window.shape[0]
