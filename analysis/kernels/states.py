"""Numba kernels of the refined states: levels from segments, and per-frame states by Viterbi decoding.

numpy, numba and math only. The segments come from :mod:`.segment`; the
public wrapper is :class:`plstream.analysis.intermittency.segmenter.Segmenter`.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def decode_spots(
    window,
    piece,
    vbegin,
    last_state,
    n_frames,
    lag,
    final,
    levels,
    noise,
    switch_cost,
    back,
    runs_out,
    first_spot,
):
    """Per-frame states by Viterbi decoding with the spots' levels; the frames older than ``lag`` become final.

    A hidden-Markov chain over OFF (0), ON (1) and, where the spot has a GRAY
    level, GRAY (2): each frame's value is Gaussian about the state's level
    with variance ``a + g * max(level, 0)``, and every change of state costs
    ``switch_cost`` (in units of minus twice the log-likelihood). The most
    likely state sequence of the window ``vbegin[i] .. n_frames-1`` is found
    (Viterbi), starting from the last final state when the trace continues;
    frames before ``n_frames - lag`` (all at the end of the run) become final
    and are handed out as runs.

    Parameters
    ----------
    vbegin : (S,) int64
        Updated in place: each spot's first frame column whose state is not final.
    last_state : (S,) int8
        Updated in place: the state of the frame before ``vbegin`` (-1 = none:
        a gap, an unmeasured frame or the spot's first frame comes next).
    levels : (S, 3) float64
        ``[L_off, L_on, L_gray]`` photons; NaN ``L_on``: the spot was never ON
        (every frame OFF); NaN ``L_gray``: no GRAY state.
    back : (>= W, 3) int8
        Work buffer.
    runs_out : (K, 6) float64
        Written: rows ``[spot, first column, frames, state, sum of x, starts_piece]``.

    Returns
    -------
    (int, int)
        Rows written, and the spot to start the next call with (as :func:`segment_spots`).
    """
    n_out = 0
    k_max = runs_out.shape[0]
    mu = np.empty(3)
    cost = np.empty(3)
    new = np.empty(3)
    for i in range(first_spot, window.shape[0]):
        row = window[i]
        b = vbegin[i]
        limit = n_frames if final else n_frames - lag
        if b >= limit:
            continue
        if n_out + (limit - b) + 1 > k_max:
            return n_out, i
        n_states = 2
        mu[0] = levels[i, 0]
        mu[1] = levels[i, 1]
        mu[2] = levels[i, 2]
        if not math.isfinite(mu[0]):
            mu[0] = 0.0
        if math.isfinite(mu[2]) and math.isfinite(mu[1]):
            n_states = 3
        a = noise[i, 0]
        g = noise[i, 1]
        prev = last_state[i]
        start = b
        while start < limit:
            if not math.isfinite(row[start]):
                start += 1
                prev = -1
                continue
            stop = start + 1
            while stop < n_frames and math.isfinite(row[stop]) and piece[stop] == 0:
                stop += 1
            if piece[start] == 1:
                prev = -1
            starts_piece = prev < 0
            end = min(stop, limit)
            if not math.isfinite(mu[1]):
                # never ON: every frame OFF
                s1 = 0.0
                for t in range(start, end):
                    s1 += row[t]
                runs_out[n_out, 0] = i
                runs_out[n_out, 1] = start
                runs_out[n_out, 2] = end - start
                runs_out[n_out, 3] = 0
                runs_out[n_out, 4] = s1
                runs_out[n_out, 5] = 1.0 if starts_piece else 0.0
                n_out += 1
                prev = 0
                start = end
                if end < stop:
                    break
                continue
            for k in range(n_states):
                cost[k] = 0.0 if prev < 0 or prev == k else switch_cost
            for t in range(start, stop):
                x = row[t]
                v = a + g * max(x, 0.0)  # the frame's own noise, the same for every state
                for k in range(n_states):
                    # best predecessor for state k
                    arg = k
                    low = cost[k]
                    for q in range(n_states):
                        if q != k and cost[q] + switch_cost < low:
                            low = cost[q] + switch_cost
                            arg = q
                    d = x - mu[k]
                    new[k] = low + d * d / v
                    back[t - start, k] = arg
                for k in range(n_states):
                    cost[k] = new[k]
            state = 0
            for k in range(1, n_states):
                if cost[k] < cost[state]:
                    state = k
            # backtrack into back[:, 0] as the path (reuse column 0 after reading)
            path_state = state
            for t in range(stop - 1, start - 1, -1):
                here = path_state
                path_state = back[t - start, here]
                back[t - start, 0] = here
            # runs of the final part [start, end)
            t = start
            while t < end:
                state = back[t - start, 0]
                u = t
                s1 = 0.0
                while u < end and back[u - start, 0] == state:
                    s1 += row[u]
                    u += 1
                runs_out[n_out, 0] = i
                runs_out[n_out, 1] = t
                runs_out[n_out, 2] = u - t
                runs_out[n_out, 3] = state
                runs_out[n_out, 4] = s1
                runs_out[n_out, 5] = 1.0 if (t == start and starts_piece) else 0.0
                n_out += 1
                prev = state
                t = u
            start = end
            if end < stop:
                break
        vbegin[i] = max(start, b)
        last_state[i] = prev
    return n_out, window.shape[0]


@njit(cache=True, nogil=True)
def _weighted_quantile(values, weights, order, n, q):
    """The ``q`` quantile of ``values[order[:n]]`` weighted by ``weights`` (``order`` sorts them)."""
    total = 0.0
    for k in range(n):
        total += weights[order[k]]
    target = q * total
    cum = 0.0
    for k in range(n):
        cum += weights[order[k]]
        if cum >= target:
            return values[order[k]]
    return values[order[n - 1]]


@njit(cache=True, nogil=True)
def spot_levels(
    spot, level, length, rss, off_variance, on_fraction, off_fraction, gray_min, gray_min_total, z_significant, out
):
    """``out[i] = [L_off, L_on, L_gray]`` of every spot from its segments (rows grouped by spot, any order).

    See :func:`plstream.analysis.intermittency.segmenter.spot_levels` (the same rules; this is its fast twin).
    Spots with no segment keep their row of ``out``.
    """
    n = spot.shape[0]
    order = np.argsort(spot, kind="mergesort")
    sel = np.empty(n, np.int64)
    a = 0
    while a < n:
        i = spot[order[a]]
        b = a
        while b < n and spot[order[b]] == i:
            b += 1
        rows = order[a:b]
        var = off_variance[i] if off_variance[i] > 0 else 1.0
        # bright: significant levels, sorted by level
        idx = rows[np.argsort(level[rows])]
        k = 0
        for r in idx:
            if level[r] / math.sqrt(var / max(length[r], 1.0)) > z_significant:
                sel[k] = r
                k += 1
        if k == 0:
            out[i, 0] = 0.0
            out[i, 1] = math.nan
            out[i, 2] = math.nan
            a = b
            continue
        top = _weighted_quantile(level, length, sel[:k], k, 0.9)
        j = 0
        for q in range(k):
            if level[sel[q]] >= 0.6 * top:
                sel[j] = sel[q]
                j += 1
        on = _weighted_quantile(level, length, sel[:j], j, 0.5)
        j = 0
        for r in idx:
            if level[r] <= 0.3 * on:
                sel[j] = r
                j += 1
        off = _weighted_quantile(level, length, sel[:j], j, 0.5) if j > 0 else 0.0
        span = on - off
        j = 0
        total = 0.0
        for r in idx:
            dof = max(length[r] - 1.0, 1.0)
            steady = rss[r] <= dof + 3.0 * math.sqrt(2.0 * dof)
            if (
                level[r] > off + off_fraction * span
                and level[r] < off + on_fraction * span
                and length[r] >= gray_min
                and steady
            ):
                sel[j] = r
                j += 1
                total += length[r]
        gray = _weighted_quantile(level, length, sel[:j], j, 0.5) if j > 0 and total >= gray_min_total else math.nan
        out[i, 0] = off
        out[i, 1] = on
        out[i, 2] = gray
        a = b
