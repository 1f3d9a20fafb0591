"""Array helpers of the dashboard model: peak decimation, state counting, robust levels (numpy only)."""

from __future__ import annotations

import math
from typing import overload

import numpy as np

__all__ = ["median_where_on", "peak_decimate", "robust_levels", "run_outline", "spot_map", "state_counts"]


@overload
def peak_decimate(
    y: np.ndarray, max_points: int, companion: None = None, *, companion_mode: str = "any"
) -> tuple[np.ndarray, np.ndarray, None]: ...
@overload
def peak_decimate(
    y: np.ndarray, max_points: int, companion: np.ndarray, *, companion_mode: str = "any"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
@overload
def peak_decimate(
    y: np.ndarray, max_points: int, companion: np.ndarray | None = None, *, companion_mode: str = "any"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...
def peak_decimate(
    y: np.ndarray, max_points: int, companion: np.ndarray | None = None, *, companion_mode: str = "any"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reduce a long series to at most ``max_points`` points keeping every bin's minimum and maximum.

    The series is cut into ``max_points // 2`` equal bins of k samples; each
    bin becomes two points, its minimum (placed at the bin's first sample)
    and its maximum (at its last sample), so a one-frame blink or spike is
    never lost, unlike plain subsampling. NaN are ignored (a bin of NaN stays NaN).

    Parameters
    ----------
    y : (n,) float array
    max_points : int
        Most points returned (>= 2). Series not longer than this come back whole.
    companion : (n,) float array, optional
        A second series on the same samples, reduced per bin as well.
    companion_mode : {"any", "peak"}
        "any": the bin's maximum for both points (e.g. 1 if any ON frame);
        "peak": minimum and maximum like ``y``.

    Returns
    -------
    index : (m,) int64
        Sample index of each returned point (to pick x values), increasing.
    y_out : (m,) array of ``y``'s dtype
    companion_out : (m,) array or None
    """
    n = len(y)
    if n <= max(2, int(max_points)):
        return np.arange(n, dtype=np.int64), y, companion
    n_bins = max(1, int(max_points) // 2)
    k = math.ceil(n / n_bins)
    n_bins = math.ceil(n / k)
    starts = np.arange(n_bins, dtype=np.int64) * k
    index = np.empty(2 * n_bins, np.int64)
    index[0::2] = starts
    index[1::2] = np.minimum(starts + k - 1, n - 1)
    y_out = _min_max(y, k, n_bins)
    if companion is None:
        return index, y_out, None
    if companion_mode == "peak":
        return index, y_out, _min_max(companion, k, n_bins)
    if companion_mode != "any":
        raise ValueError(f"companion_mode must be 'any' or 'peak'; got {companion_mode!r}")
    return index, y_out, np.repeat(np.fmax.reduce(_binned(companion, k, n_bins), axis=1), 2)


def _binned(y: np.ndarray, k: int, n_bins: int) -> np.ndarray:
    values = np.asarray(y, dtype=np.result_type(y.dtype, np.float32))
    padded = np.full(n_bins * k, np.nan, values.dtype)
    padded[: len(values)] = values
    return padded.reshape(n_bins, k)


def _min_max(y: np.ndarray, k: int, n_bins: int) -> np.ndarray:
    bins = _binned(y, k, n_bins)
    out = np.empty(2 * n_bins, bins.dtype)
    out[0::2] = np.fmin.reduce(bins, axis=1)  # fmin/fmax skip NaN without warnings
    out[1::2] = np.fmax.reduce(bins, axis=1)
    return out


def run_outline(x: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last point of every run of equal values: the same outline with far fewer points.

    A filled on/off band drawn from this costs two points per run instead of
    one per sample (a band that is ON for a whole decimated view becomes two points).

    Parameters
    ----------
    x : (n,) float, increasing
    values : (n,) float, no NaN

    Returns
    -------
    x_out, values_out : (m,) arrays, m <= n
    """
    n = len(values)
    if n <= 2:
        return x, values
    change = np.flatnonzero(values[1:] != values[:-1])  # run i ends at change[i], the next starts at change[i] + 1
    keep = np.unique(np.concatenate([[0, n - 1], change, change + 1]))
    return x[keep], values[keep]


def state_counts(block: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count ON frames, measured frames and on<->off switches in a block of states.

    Parameters
    ----------
    block : (S, n) int8
        1 on, 0 off, -1 not measured, frames in order.
    last : (S,) int8
        Each spot's last measured state before the block (-1 none).

    Returns
    -------
    on, measured, switches : (S,) int64
    new_last : (S,) int8
        Last measured state after the block.
    """
    _s, n = block.shape
    valid = block >= 0
    on = np.count_nonzero(block == 1, axis=1).astype(np.int64)
    measured = np.count_nonzero(valid, axis=1).astype(np.int64)
    # Forward-fill unmeasured frames with the previous measured state, then count changes.
    idx = np.where(valid, np.arange(n, dtype=np.int64), -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(block, np.maximum(idx, 0), axis=1)
    filled = np.where(idx >= 0, filled, np.asarray(last, np.int8)[:, None])
    chain = np.concatenate([np.asarray(last, np.int8)[:, None], filled], axis=1)
    a, b = chain[:, :-1], chain[:, 1:]
    switches = np.count_nonzero((a >= 0) & (b >= 0) & (a != b), axis=1).astype(np.int64)
    return on, measured, switches, chain[:, -1].copy()


def median_where_on(intensity: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Row-wise median of ``intensity`` over ON (state 1), finite entries; NaN for rows without any.

    Parameters
    ----------
    intensity : (S, n) float
    state : (S, n) int8

    Returns
    -------
    (S,) float64
    """
    values = np.where(state == 1, intensity, np.nan).astype(np.float64)
    count = np.count_nonzero(np.isfinite(values), axis=1)
    values.sort(axis=1)  # NaN sort last
    lo = np.maximum((count - 1) // 2, 0)[:, None]
    hi = np.maximum(count // 2, 0)[:, None]
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    med = 0.5 * (np.take_along_axis(values, lo, 1) + np.take_along_axis(values, hi, 1))[:, 0]
    med[count == 0] = np.nan
    return med


def robust_levels(
    image: np.ndarray, low_percent: float = 1.0, high_percent: float = 99.7, max_samples: int = 65536
) -> tuple[float, float]:
    """Display levels (low, high) from percentiles of the finite pixels (a strided sample of large images).

    Fixed levels like these, recomputed rarely, keep a live image from
    flickering; ``high > low`` always.
    """
    flat = np.asarray(image).ravel()
    step = max(1, flat.size // max_samples)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [low_percent, high_percent])
    if not hi > lo:
        hi = lo + max(1.0, abs(lo) * 1e-3)
    return float(lo), float(hi)


def spot_map(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, amplitude: np.ndarray, sigma_px: float = 1.3
) -> np.ndarray:
    """A synthetic image: one Gaussian per spot (peak ``amplitude``, NaN -> 1) at (x, y), float32 (H, W).

    Stands in for the image when a result file holds none.
    """
    rows, cols = int(shape[0]), int(shape[1])
    out = np.zeros((rows, cols), np.float32)
    radius = max(1, int(math.ceil(3 * sigma_px)))
    offsets = np.arange(-radius, radius + 1)
    amps = np.nan_to_num(np.asarray(amplitude, np.float64), nan=1.0)
    for xi, yi, ai in zip(np.asarray(x, np.float64), np.asarray(y, np.float64), amps):
        if not (np.isfinite(xi) and np.isfinite(yi)):
            continue
        c, r = int(round(xi)), int(round(yi))
        cc, rr = c + offsets, r + offsets
        gx = np.exp(-0.5 * ((cc - xi) / sigma_px) ** 2)
        gy = np.exp(-0.5 * ((rr - yi) / sigma_px) ** 2)
        keep_c = (cc >= 0) & (cc < cols)
        keep_r = (rr >= 0) & (rr < rows)
        if keep_c.any() and keep_r.any():
            out[np.ix_(rr[keep_r], cc[keep_c])] += (ai * np.outer(gy[keep_r], gx[keep_c])).astype(np.float32)
    return out
