"""numba kernels of the simulated camera: random numbers, PSF rendering, camera noise.

Everything here is a small pure function over arrays the caller allocated;
no logging, I/O or state outside the arguments. The public wrappers (and the
tables these kernels read) live in :mod:`plstream.acquire_adapters.simulated.camera`
and :mod:`plstream.acquire_adapters.simulated._model`.

Random numbers come from xoshiro256** (Blackman & Vigna 2018), whose four
64-bit state words the caller seeds (from ``SeedSequence([seed, t])``), so
every frame is reproducible on its own. On top of it:

- uniform doubles in the open interval (0, 1) with 53 random bits;
- standard normals by the exact ziggurat method (Marsaglia & Tsang 2000, in
  Doornik's 2005 ZIGNOR form, 128 layers; tables from :func:`ziggurat_tables`);
- Poisson counts by multiplication (mean < 10) or by PTRS (Hörmann 1993,
  the algorithm numpy uses; mean >= 10);
- draws from any finite discrete distribution by Walker's alias method.

Speed: numpy's ``Generator.poisson`` alone costs about 80 ns per pixel. Here
a background-only pixel costs one random number and one alias-table look-up
(its whole chain, shot noise + read noise + rounding, is one precomputed
distribution per background level), so a 512 x 512 frame takes a few
milliseconds on one core.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "ZIGGURAT_LAYERS",
    "build_alias",
    "draw_normal",
    "draw_poisson",
    "expose",
    "render_signal",
    "ziggurat_tables",
]

#: Layers of the ziggurat (a power of two; the low bits of one draw pick the layer).
ZIGGURAT_LAYERS = 128
_ZIG_R = 3.442619855899  # start of the tail for 128 layers
_ZIG_V = 9.91256303526217e-3  # area of each layer

_U53 = 1.0 / 9007199254740992.0  # 2**-53


def ziggurat_tables() -> tuple[np.ndarray, np.ndarray]:
    """Layer edges and ratios of the 128-layer normal ziggurat.

    Returns
    -------
    x : numpy.ndarray, shape (129,)
        Right edges of the layers; ``x[0]`` is the width of the base strip
        (area V / f(R)), ``x[1] = R``, ``x[128] = 0``.
    ratio : numpy.ndarray, shape (128,)
        ``x[i + 1] / x[i]``: a draw inside this fraction of layer *i* is accepted
        at once.
    """
    x = np.zeros(ZIGGURAT_LAYERS + 1)
    f = math.exp(-0.5 * _ZIG_R * _ZIG_R)
    x[0] = _ZIG_V / f
    x[1] = _ZIG_R
    for i in range(2, ZIGGURAT_LAYERS):
        x[i] = math.sqrt(-2.0 * math.log(_ZIG_V / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    x[ZIGGURAT_LAYERS] = 0.0
    return x, x[1:] / x[:-1]


# --------------------------------------------------------------------------- RNG
@njit(inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(inline="always")
def _next(s0, s1, s2, s3):
    """One xoshiro256** step: the new state and a 64-bit output."""
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return s0, s1, s2, s3, result


@njit(inline="always")
def _to_unit(r):
    """Top 53 bits of ``r`` as a double in the open interval (0, 1)."""
    return (np.float64(r >> np.uint64(11)) + 0.5) * _U53


@njit(inline="always")
def _normal(s0, s1, s2, s3, zx, zr):
    """A standard normal deviate (ziggurat); returns the new state and the value."""
    while True:
        s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
        u = 2.0 * _to_unit(r) - 1.0
        i = np.int64(r & np.uint64(ZIGGURAT_LAYERS - 1))
        if abs(u) < zr[i]:
            return s0, s1, s2, s3, u * zx[i]
        if i == 0:  # the tail beyond R (Marsaglia 1964)
            while True:
                s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
                x = math.log(_to_unit(r)) / _ZIG_R
                s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
                y = math.log(_to_unit(r))
                if -2.0 * y >= x * x:
                    break
            return s0, s1, s2, s3, (x - _ZIG_R) if u < 0.0 else (_ZIG_R - x)
        x = u * zx[i]
        f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
        f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
        s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
        if f1 + _to_unit(r) * (f0 - f1) < 1.0:
            return s0, s1, s2, s3, x


@njit(inline="always")
def _poisson(lam, s0, s1, s2, s3):
    """A Poisson deviate of mean ``lam`` (>= 0); returns the new state and the count."""
    if lam <= 0.0:
        return s0, s1, s2, s3, 0
    if lam < 10.0:  # multiplication method
        s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
        prod = _to_unit(r)
        if prod <= 1.0 - lam:  # squeeze: 1 - lam <= exp(-lam), so the count is 0 (saves exp for faint pixels)
            return s0, s1, s2, s3, 0
        limit = math.exp(-lam)
        k = 0
        while prod > limit:
            k += 1
            s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
            prod *= _to_unit(r)
        return s0, s1, s2, s3, k
    # PTRS, transformed rejection with squeeze (Hörmann 1993), as in numpy
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
        u = _to_unit(r) - 0.5
        s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
        v = _to_unit(r)
        us = 0.5 - abs(u)
        kf = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return s0, s1, s2, s3, np.int64(kf)
        if kf < 0.0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= -lam + kf * loglam - math.lgamma(kf + 1.0):
            return s0, s1, s2, s3, np.int64(kf)


# --------------------------------------------------------------------- rendering
@njit(cache=True, nogil=True)
def render_signal(xy, photons, sigma, half, out):
    """Add pixel-integrated Gaussian spots to ``out`` (expected photons per pixel).

    Parameters
    ----------
    xy : float64 array (E, 2)
        Spot centres (x = column, y = row; pixel centres at integers).
    photons : float64 array (E,)
        Expected photons of each spot in this frame; spots with <= 0 are skipped.
    sigma : float
        PSF standard deviation in px.
    half : int
        Half width of the window drawn around each spot (px).
    out : float64 array (H, W)
        Accumulated in place; pixels outside the image are dropped.
    """
    height, width = out.shape
    n = 2 * half + 1
    edges = np.empty(n + 1)
    ex = np.empty(n)
    ey = np.empty(n)
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    for e in range(photons.shape[0]):
        amount = photons[e]
        if amount <= 0.0:
            continue
        x = xy[e, 0]
        y = xy[e, 1]
        cx = np.int64(math.floor(x + 0.5)) - half
        cy = np.int64(math.floor(y + 0.5)) - half
        for j in range(n + 1):
            edges[j] = math.erf((cx + j - 0.5 - x) * scale)
        for j in range(n):
            ex[j] = 0.5 * (edges[j + 1] - edges[j])
        for j in range(n + 1):
            edges[j] = math.erf((cy + j - 0.5 - y) * scale)
        for j in range(n):
            ey[j] = 0.5 * (edges[j + 1] - edges[j])
        for jy in range(n):
            row = cy + jy
            if row < 0 or row >= height:
                continue
            wy = amount * ey[jy]
            for jx in range(n):
                col = cx + jx
                if 0 <= col < width:
                    out[row, col] += wy * ex[jx]


@njit(cache=True, nogil=True)
def build_alias(pmf, prob, alias):
    """Walker/Vose alias tables, one per row of ``pmf``.

    Parameters
    ----------
    pmf : float64 array (L, A)
        Probabilities of the values 0..A-1, one distribution per row (rows sum to 1).
    prob : float64 array (L, A)
        Out: acceptance threshold of each column.
    alias : int32 array (L, A)
        Out: the value a column gives when its threshold is not met.
    """
    n_rows, n = pmf.shape
    scaled = np.empty(n)
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    for row in range(n_rows):
        n_small = 0
        n_large = 0
        for i in range(n):
            scaled[i] = pmf[row, i] * n
            alias[row, i] = i
            if scaled[i] < 1.0:
                small[n_small] = i
                n_small += 1
            else:
                large[n_large] = i
                n_large += 1
        while n_small > 0 and n_large > 0:
            n_small -= 1
            s = small[n_small]
            n_large -= 1
            g = large[n_large]
            prob[row, s] = scaled[s]
            alias[row, s] = g
            scaled[g] = (scaled[g] + scaled[s]) - 1.0
            if scaled[g] < 1.0:
                small[n_small] = g
                n_small += 1
            else:
                large[n_large] = g
                n_large += 1
        for i in range(n_large):
            prob[row, large[i]] = 1.0
        for i in range(n_small):
            prob[row, small[i]] = 1.0


@njit(inline="always")
def _alias_draw(prob, alias, row, s0, s1, s2, s3):
    """One draw from row ``row`` of alias tables; returns the new state and the column value."""
    s0, s1, s2, s3, r = _next(s0, s1, s2, s3)
    x = _to_unit(r) * prob.shape[1]
    j = np.int64(x)
    other = np.int64(alias[row, j])
    use_other = np.int64(x - j >= prob[row, j])  # arithmetic select: no unpredictable branch
    return s0, s1, s2, s3, j + use_other * (other - j)


@njit(cache=True, nogil=True)
def expose(
    signal,
    background,
    level,
    adu_prob,
    adu_alias,
    adu_low,
    e_prob,
    e_alias,
    zx,
    zr,
    offset,
    gain,
    read_noise_adu,
    max_adu,
    state,
    out,
):
    """Shot noise, gain, read noise, offset, rounding and clipping of one frame.

    Each pixel is ``round(offset + gain * k + read_noise_adu * N(0, 1))``
    clipped to ``[0, max_adu]``, with ``k ~ Poisson(background + signal)``
    photo-electrons. Two passes keep the common case fast:

    1. every pixel whose background level has tables (``level >= 0``) draws its
       background-only value in one step from the level's ADU alias table (the
       exact distribution of the whole chain, see ``_model.background_tables``);
    2. pixels with signal draw ``Poisson(signal)`` spot electrons; when that is
       not 0 (and always for pixels without tables) the pixel is redrawn step
       by step: background electrons from the level's electron alias table
       (or by PTRS), plus the spot electrons, then read noise (ziggurat).
       A pixel with 0 spot electrons keeps its pass-1 value, which is
       independent of the spot draw and has exactly the right distribution.
       A negative signal is light taken away (dark particles on a bright
       field): such a pixel draws ``Poisson(max(background + signal, 0))``.

    Parameters
    ----------
    signal : float64 array (H, W)
        Expected photons from the spots (negative: photons absorbed).
    background : float64 array (H, W)
        Expected background photons.
    level : int32 array (H, W)
        Row of the tables for this pixel's background, or -1.
    adu_prob, adu_alias : float64 / int32 arrays (L, A)
        Alias tables of a background-only pixel's value minus ``adu_low``.
    adu_low : int
        Output value of ADU table column 0.
    e_prob, e_alias : float64 / int32 arrays (L, K)
        Alias tables of the background electrons.
    zx, zr : float64 arrays
        Ziggurat tables from :func:`ziggurat_tables`.
    offset, gain, read_noise_adu, max_adu : float
        Camera offset (ADU), gain (ADU per electron), read noise (ADU rms),
        largest value of the output type.
    state : uint64 array (4,)
        xoshiro256** state; advanced in place.
    out : unsigned integer array (H, W)
        The frame in ADU.
    """
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    height, width = out.shape
    for row in range(height):
        for col in range(width):
            lv = level[row, col]
            if lv >= 0:
                s0, s1, s2, s3, a = _alias_draw(adu_prob, adu_alias, lv, s0, s1, s2, s3)
                out[row, col] = adu_low + a
    for row in range(height):
        for col in range(width):
            lv = level[row, col]
            lam = signal[row, col]
            if lam == 0.0 and lv >= 0:
                continue
            if lam < 0.0:  # light absorbed: the whole pixel from its reduced mean
                s0, s1, s2, s3, k = _poisson(max(background[row, col] + lam, 0.0), s0, s1, s2, s3)
                extra = 0
            else:
                s0, s1, s2, s3, extra = _poisson(lam, s0, s1, s2, s3)
                if lv >= 0:
                    if extra == 0:  # no spot photon: the pass-1 value already has the right distribution
                        continue
                    s0, s1, s2, s3, k = _alias_draw(e_prob, e_alias, lv, s0, s1, s2, s3)
                else:
                    s0, s1, s2, s3, k = _poisson(background[row, col], s0, s1, s2, s3)
            s0, s1, s2, s3, z = _normal(s0, s1, s2, s3, zx, zr)
            value = math.floor(offset + gain * (k + extra) + read_noise_adu * z + 0.5)
            if value < 0.0:
                value = 0.0
            elif value > max_adu:
                value = max_adu
            out[row, col] = value
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3


@njit(cache=True, nogil=True)
def draw_normal(state, zx, zr, out):
    """Fill ``out`` (float64, 1-D) with standard normals; for tests of the sampler."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for i in range(out.shape[0]):
        s0, s1, s2, s3, out[i] = _normal(s0, s1, s2, s3, zx, zr)
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3


@njit(cache=True, nogil=True)
def draw_poisson(state, lam, out):
    """Fill ``out`` (int64, 1-D) with Poisson counts of mean ``lam``; for tests of the sampler."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for i in range(out.shape[0]):
        s0, s1, s2, s3, out[i] = _poisson(lam, s0, s1, s2, s3)
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
