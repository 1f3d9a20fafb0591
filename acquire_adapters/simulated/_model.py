"""The physics behind the simulated camera: where the emitters are, how they blink, how the stage drifts.

Everything is drawn from a seeded :class:`numpy.random.Generator` the caller
passes in; nothing here renders pixels (see ``_kernels``).

Conventions: x = column, y = row, pixel centres at integers, times in units of
frames (frame *t* is exposed during ``[t, t + 1)``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from plstream.acquire_adapters.simulated import _kernels as _sim_kernels

__all__ = [
    "BackgroundTables",
    "background_tables",
    "blink",
    "draw_brightness",
    "illumination_background",
    "place_emitters",
    "sample_dwells",
    "smooth_path",
]

#: Backgrounds above this many photons per pixel are sampled by PTRS instead of CDF tables.
TABLE_MAX_PHOTONS = 200.0
_MAX_LEVELS = 128
_LEVEL_STEP = 1.0 / 128.0  # finest quantization of the background map (photons)

BackgroundTables = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]
"""``(quantized, level, adu_prob, adu_alias, adu_low, electron_prob, electron_alias)``; see background_tables."""


def place_emitters(
    rng: np.random.Generator, shape: tuple[int, int], n: int, min_separation_px: float, margin_px: float
) -> np.ndarray:
    """Uniformly random positions, at least ``min_separation_px`` apart and ``margin_px`` from the edges.

    Returns
    -------
    numpy.ndarray, shape (n, 2)
        Columns x, y in px (reference frame).

    Raises
    ------
    ValueError
        When ``n`` emitters do not fit (dart throwing gives up after 1000 tries per emitter).
    """
    height, width = shape
    low = np.array([margin_px, margin_px])
    high = np.array([width - 1 - margin_px, height - 1 - margin_px])
    if np.any(high < low):
        raise ValueError(f"margin_px={margin_px} leaves no room in a {height}x{width} image; lower margin_px")
    placed = np.empty((n, 2))
    count = 0
    tries = 0
    min_sq = min_separation_px**2
    while count < n:
        if tries > 1000 * max(n, 1):
            raise ValueError(
                f"could not place {n} emitters at least {min_separation_px} px apart and {margin_px} px from the "
                f"edges of a {height}x{width} image (placed {count}); lower n_emitters or min_separation_px, "
                "or enlarge shape"
            )
        candidates = low + rng.random((64, 2)) * (high - low)
        tries += len(candidates)
        for candidate in candidates:
            if count and np.min(np.sum((placed[:count] - candidate) ** 2, axis=1)) < min_sq:
                continue
            placed[count] = candidate
            count += 1
            if count == n:
                break
    return placed


def draw_brightness(rng: np.random.Generator, n: int, mean_photons: float, spread: float) -> np.ndarray:
    """Lognormal per-emitter brightness with the given mean (photons per fully-on frame)."""
    return mean_photons * np.exp(spread * rng.standard_normal(n) - 0.5 * spread**2)


def sample_dwells(rng: np.random.Generator, n: int, exponent: float, min_dwell: float, truncation: float) -> np.ndarray:
    """Dwell times from a truncated power law, ``p(t) ∝ t**-exponent * exp(-t / truncation)``, t >= min_dwell.

    Exact rejection sampling: for ``exponent > 1`` the proposal is the pure
    power law (Pareto, by inversion) accepted with probability
    ``exp(-(t - min_dwell) / truncation)``; otherwise the proposal is
    ``min_dwell + Exponential(truncation)`` accepted with probability
    ``(min_dwell / t) ** exponent``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        How many dwell times.
    exponent : float
        Power-law exponent m (>= 0; > 1 when ``truncation`` is infinite).
    min_dwell : float
        Smallest dwell time, frames (> 0).
    truncation : float
        Exponential cut-off time, frames (> 0, may be ``inf``).

    Returns
    -------
    numpy.ndarray, shape (n,)
        Dwell times in frames.
    """
    out = np.empty(n)
    filled = 0
    while filled < n:
        want = n - filled
        batch = int(want * 1.5) + 32
        if exponent > 1.0:
            t = min_dwell * (1.0 - rng.random(batch)) ** (-1.0 / (exponent - 1.0))
            accept = np.exp(-(t - min_dwell) / truncation) if math.isfinite(truncation) else np.isfinite(t)
            keep = rng.random(batch) < accept
        else:
            t = min_dwell + rng.exponential(truncation, batch)
            keep = rng.random(batch) < (min_dwell / t) ** exponent
        accepted = t[keep][:want]
        out[filled : filled + len(accepted)] = accepted
        filled += len(accepted)
    return out


def _cumulative_on(rng: np.random.Generator, n_frames: int, p) -> np.ndarray:
    """ON time accumulated by one emitter at the frame edges 0, 1, ..., n_frames (photobleaching included)."""
    start_on = rng.random() < 0.5
    budget = rng.exponential(p.bleach_on_frames) if math.isfinite(p.bleach_on_frames) else math.inf
    times = [np.zeros(1)]
    on_cum = [np.zeros(1)]
    t_end = 0.0
    on_end = 0.0
    is_on = start_on
    batch = 16
    while t_end < n_frames and on_end < budget:
        batch = min(2 * batch, 4096)
        on = sample_dwells(rng, batch, p.on_exponent, p.min_dwell_frames, p.on_truncation_frames)
        off = sample_dwells(rng, batch, p.off_exponent, p.min_dwell_frames, p.off_truncation_frames)
        first, second = (on, off) if is_on else (off, on)
        dwell = np.empty(2 * batch)
        dwell[0::2] = first
        dwell[1::2] = second
        on_mask = np.zeros(2 * batch, bool)
        on_mask[(0 if is_on else 1) :: 2] = True
        times.append(t_end + np.cumsum(dwell))
        on_cum.append(on_end + np.cumsum(np.where(on_mask, dwell, 0.0)))
        t_end = float(times[-1][-1])
        on_end = float(on_cum[-1][-1])
    edges = np.arange(n_frames + 1, dtype=float)
    cumulative = np.interp(edges, np.concatenate(times), np.concatenate(on_cum))
    return np.minimum(cumulative, budget)


def blink(rng: np.random.Generator, n_frames: int, n_emitters: int, params, max_redraws: int = 1000) -> np.ndarray:
    """Fraction of each frame's exposure each emitter is ON.

    Continuous-time alternating ON/OFF dwells (:func:`sample_dwells`), a
    random initial state (ON with probability 1/2) and photobleaching once
    the total ON time exceeds an exponential budget of mean
    ``params.bleach_on_frames``. ``on_fraction[t, e]`` is the ON time of
    emitter *e* within ``[t, t + 1)``.

    Every emitter is ON for at least one frame-equivalent in total (so it can
    be found): an emitter whose draw falls short is redrawn from the next
    random numbers, i.e. the population is conditioned on being detectable.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_emitters), float32 in [0, 1]

    Raises
    ------
    ValueError
        When an emitter stays below one frame-equivalent after ``max_redraws`` draws.
    """
    on_fraction = np.empty((n_frames, n_emitters), np.float32)
    required = min(1.0, float(n_frames))
    for e in range(n_emitters):
        for _ in range(max_redraws):
            cumulative = _cumulative_on(rng, n_frames, params)
            if cumulative[-1] >= required:
                break
        else:
            raise ValueError(
                f"emitter {e} was ON for less than one frame in {max_redraws} draws; increase bleach_on_frames, "
                "n_frames or the ON dwell times (on_exponent, on_truncation_frames)"
            )
        on_fraction[:, e] = np.clip(np.diff(cumulative), 0.0, 1.0)
    return on_fraction


def smooth_path(rng: np.random.Generator, n_frames: int, n_terms: int = 3) -> np.ndarray:
    """A smooth random path starting at 0: linear trend plus low-frequency sinusoids (unscaled).

    ``path(s) = a0 * s + sum_k a_k * sin(2 pi f_k s + phi_k)`` with ``s = t / (T - 1)``,
    ``a ~ N(0, 1)`` (the k-th sinusoid's amplitude divided by k + 1),
    ``f_k ~ U(0.3, 2)`` cycles per movie; then ``path -= path[0]`` so it is exactly 0 at frame 0.
    """
    s = np.arange(n_frames) / max(n_frames - 1, 1)
    path = rng.standard_normal() * s
    for k in range(n_terms):
        amplitude = rng.standard_normal() / (k + 1)
        frequency = rng.uniform(0.3, 2.0)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        path = path + amplitude * np.sin(2.0 * math.pi * frequency * s + phase)
    return path - path[0]


def illumination_background(shape: tuple[int, int], background_photons: float, edge_ratio: float) -> np.ndarray:
    """Background photons per pixel under a Gaussian illumination profile.

    ``background_photons * exp(-r**2 / (2 w**2))`` with r the distance from the
    image centre ``((W - 1) / 2, (H - 1) / 2)`` and w chosen so the corners get
    ``edge_ratio`` times the centre (flat when ``edge_ratio == 1``).
    """
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(float)
    r2 = (x - (width - 1) / 2.0) ** 2 + (y - (height - 1) / 2.0) ** 2
    corner2 = ((width - 1) / 2.0) ** 2 + ((height - 1) / 2.0) ** 2
    if edge_ratio >= 1.0 or corner2 == 0.0:
        return np.full(shape, float(background_photons))
    return background_photons * np.exp(r2 / corner2 * math.log(edge_ratio))


def background_tables(
    background: np.ndarray, offset_adu: float, gain_adu_per_e: float, read_noise_adu: float, max_adu: float
) -> BackgroundTables:
    """Quantize a background map and tabulate, per level, the distribution of a background-only pixel's value.

    A pixel with background ``b`` and no spot reads
    ``clip(round(offset + gain * Poisson(b) + read_noise_adu * N(0, 1)), 0, max_adu)``;
    that value's exact distribution is ``pois(b) @ N`` with ``N[k, a]`` the
    probability that ``k`` electrons read ``a`` ADU, and is turned into alias
    tables so the noise kernel draws it with one random number. Poisson(b)
    itself is tabulated too, for pixels that also receive spot photons.
    Both are truncated where the neglected probability is below 1e-30 (counts
    above ``b + 12 sqrt(b) + 30``, read noise beyond 10 sigma).

    The map is quantized to at most 128 levels (few tables stay in cache), no finer than 1/128 photon
    (the quantized map *is* the simulated background and goes into the truth).
    Backgrounds above ``TABLE_MAX_PHOTONS`` get no tables (``level = -1``; the
    kernel then samples those pixels step by step).

    Returns
    -------
    quantized : float64 array (H, W)
    level : int32 array (H, W)
    adu_prob, adu_alias : float64 / int32 arrays (L, A)
        Alias tables of a background-only pixel's value, ``adu_low .. adu_low + A - 1``.
    adu_low : int
    electron_prob, electron_alias : float64 / int32 arrays (L, K)
        Alias tables of the background electrons ``0 .. K - 1``.
    """
    low = float(background.min())
    high = float(background.max())
    if high > TABLE_MAX_PHOTONS:
        none = (np.ones((1, 1)), np.zeros((1, 1), np.int32))
        return background.astype(float), np.full(background.shape, -1, np.int32), *none, 0, *none
    n_levels = min(_MAX_LEVELS, int(math.ceil((high - low) / _LEVEL_STEP)) + 1)
    step = (high - low) / (n_levels - 1) if n_levels > 1 else 0.0
    index = np.zeros(background.shape, np.int64) if step == 0.0 else np.rint((background - low) / step).astype(np.int64)
    levels = low + step * np.arange(n_levels)
    electrons = np.arange(int(math.ceil(high + 12.0 * math.sqrt(high) + 30.0)))
    mean_adu = offset_adu + gain_adu_per_e * electrons
    adu_low = int(max(0.0, math.floor(offset_adu - 10.0 * read_noise_adu - 1.0)))
    adu_high = int(min(max_adu, math.ceil(mean_adu[-1] + 10.0 * read_noise_adu + 1.0)))
    edges = np.arange(adu_low, adu_high + 2) - 0.5
    edges[0] = -np.inf if adu_low == 0 else edges[0]
    edges[-1] = np.inf if adu_high == max_adu else edges[-1]
    if read_noise_adu > 0:
        cumulative = special.ndtr((edges[None, :] - mean_adu[:, None]) / read_noise_adu)
        reads = np.diff(cumulative, axis=1)
    else:
        reads = np.diff((edges[None, :] <= mean_adu[:, None]).astype(float), axis=1) * -1.0
    electron_pmf = stats.poisson.pmf(electrons[None, :], levels[:, None])
    electron_pmf /= electron_pmf.sum(axis=1, keepdims=True)
    adu_pmf = electron_pmf @ reads
    adu_pmf /= adu_pmf.sum(axis=1, keepdims=True)
    return (levels[index], index.astype(np.int32), *_alias_tables(adu_pmf), adu_low, *_alias_tables(electron_pmf))


def _alias_tables(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.empty(pmf.shape)
    alias = np.empty(pmf.shape, np.int32)
    _sim_kernels.build_alias(np.ascontiguousarray(pmf), prob, alias)
    return prob, alias
