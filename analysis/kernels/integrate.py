"""Numba kernels for per-spot photometry (numpy, numba and math only).

Images are (H, W), x = column, y = row, pixel (r, c) spans
``c - 1/2 .. c + 1/2`` by ``r - 1/2 .. r + 1/2``. All outputs are written into
arrays the caller allocated.
"""

import math

import numpy as np
from numba import njit, prange

from plstream.analysis.kernels.shared import select_kth

_SPOTS_PER_BLOCK = 8  # spots per work block of the parallel kernel (more blocks: better balance)


@njit(cache=True, nogil=True)
def _quadrant_area(x, y, radius):
    """Area of the disc (centre 0, ``radius``) inside ``[0, x] x [0, y]``, x, y >= 0."""
    x = min(x, radius)
    y = min(y, radius)
    if x <= 0.0 or y <= 0.0:
        return 0.0
    r2 = radius * radius
    if x * x + y * y <= r2:
        return x * y
    xc = math.sqrt(r2 - y * y)  # the arc meets y = const at xc < x
    return xc * y + _arc_primitive(x, radius) - _arc_primitive(xc, radius)


@njit(cache=True, nogil=True)
def _arc_primitive(t, radius):
    """Integral of sqrt(radius^2 - u^2) du from 0 to t (0 <= t <= radius)."""
    r2 = radius * radius
    return 0.5 * (t * math.sqrt(max(r2 - t * t, 0.0)) + r2 * math.asin(min(t / radius, 1.0)))


@njit(cache=True, nogil=True)
def _signed_area(x, y, radius):
    """Oriented area of the disc inside the rectangle spanned by (0, 0) and (x, y)."""
    a = _quadrant_area(abs(x), abs(y), radius)
    return a if (x >= 0.0) == (y >= 0.0) else -a


@njit(cache=True, nogil=True)
def pixel_overlap(dx, dy, radius):
    """Exact area of the unit pixel centred at (dx, dy) inside the disc of ``radius`` at 0."""
    ax = abs(dx)
    ay = abs(dy)
    far_x = ax + 0.5
    far_y = ay + 0.5
    if far_x * far_x + far_y * far_y <= radius * radius:
        return 1.0
    near_x = max(ax - 0.5, 0.0)
    near_y = max(ay - 0.5, 0.0)
    if near_x * near_x + near_y * near_y >= radius * radius:
        return 0.0
    x0 = dx - 0.5
    x1 = dx + 0.5
    y0 = dy - 0.5
    y1 = dy + 0.5
    area = (
        _signed_area(x1, y1, radius)
        - _signed_area(x0, y1, radius)
        - _signed_area(x1, y0, radius)
        + _signed_area(x0, y0, radius)
    )
    return min(max(area, 0.0), 1.0)


@njit(cache=True, nogil=True)
def _aperture_sums(image, x, y, radius, r0, r1, c0, c1, edges_x, edges_y, work):
    """``sum w``, ``sum w^2``, ``sum w d`` over pixels r0..r1, c0..c1, w = exact overlap with the disc.

    The same arithmetic as :func:`pixel_overlap`, arranged so that nothing
    is computed twice: the pixel edges ``c -+ 1/2 - x`` once per column (row),
    and the arc integrals of :func:`_quadrant_area` once per column edge and
    per row edge instead of at every corner of every cut pixel. ``edges_x``,
    ``edges_y`` are work arrays of at least ``c1 - c0 + 2`` and ``r1 - r0 + 2``
    elements, ``work`` (5, that many).
    """
    n_cols = c1 - c0 + 1
    n_rows = r1 - r0 + 1
    r2 = radius * radius
    clip_x, arc_x = work[0], work[1]
    clip_y, chord_y, arc_chord = work[2], work[3], work[4]
    for j in range(n_cols + 1):
        e = (c0 + j - 0.5) - x
        edges_x[j] = e
        clip_x[j] = min(abs(e), radius)
        arc_x[j] = _arc_primitive(clip_x[j], radius)
    for k in range(n_rows + 1):
        e = (r0 + k - 0.5) - y
        edges_y[k] = e
        clip_y[k] = min(abs(e), radius)
        chord_y[k] = math.sqrt(r2 - clip_y[k] * clip_y[k])
        arc_chord[k] = _arc_primitive(chord_y[k], radius)
    sw = 0.0
    sw2 = 0.0
    swd = 0.0
    for k in range(n_rows):
        y0 = edges_y[k]
        y1 = edges_y[k + 1]
        far_y = max(-y0, y1)
        near_y = y0 if y0 > 0.0 else (-y1 if y1 < 0.0 else 0.0)
        for j in range(n_cols):
            x0 = edges_x[j]
            x1 = edges_x[j + 1]
            far_x = max(-x0, x1)
            if far_x * far_x + far_y * far_y <= r2:
                w = 1.0
            else:
                near_x = x0 if x0 > 0.0 else (-x1 if x1 < 0.0 else 0.0)
                if near_x * near_x + near_y * near_y >= r2:
                    continue
                area = (
                    _corner_area(work, edges_x, edges_y, j + 1, k + 1, r2)
                    - _corner_area(work, edges_x, edges_y, j, k + 1, r2)
                    - _corner_area(work, edges_x, edges_y, j + 1, k, r2)
                    + _corner_area(work, edges_x, edges_y, j, k, r2)
                )
                w = min(max(area, 0.0), 1.0)
                if not w > 0.0:
                    continue
            sw += w
            sw2 += w * w
            swd += w * image[r0 + k, c0 + j]
    return sw, sw2, swd


@njit(cache=True, nogil=True)
def _corner_area(work, edges_x, edges_y, j, k, r2):
    """:func:`_signed_area` at corner (edges_x[j], edges_y[k]) from the per-edge values in ``work``."""
    x = work[0, j]
    y = work[2, k]
    if x <= 0.0 or y <= 0.0:
        a = 0.0
    elif x * x + y * y <= r2:
        a = x * y
    else:
        a = work[3, k] * y + work[1, j] - work[4, k]
    return a if (edges_x[j] >= 0.0) == (edges_y[k] >= 0.0) else -a


@njit(cache=True, nogil=True)
def _gather_annulus(image, x, y, r_in2, r_out2, r0, r1, c0, c1, out):
    """Copy the pixels whose centre is at squared distance ``r_in2..r_out2`` from (x, y) to ``out``; count them.

    Rows r0..r1, columns c0..c1, in raster order. Branch-free: every pixel is
    written and the count advances when it is in the ring (``out`` needs one
    element of room beyond the count).
    """
    n = 0
    for r in range(r0, r1 + 1):
        dy2 = (r - y) * (r - y)
        row = image[r, c0 : c1 + 1]  # a view indexed from 0: no negative-index checks
        for j in range(c1 + 1 - c0):
            dx = (c0 + j) - x
            d2 = dx * dx + dy2
            out[n] = row[j]
            n += (d2 >= r_in2) & (d2 <= r_out2)
    return n


@njit(cache=True, nogil=True)
def _pixel_fractions(start, stop, mu, scale, out):
    """``out[u - start]`` = fraction of a 1-D Gaussian (mean mu) in pixel u, u = start..stop-1.

    ``scale = 1 / (sqrt(2) sigma)``; as ``shared.delta_erf``, with each pixel
    edge's erf computed once and shared by the two pixels it separates.
    """
    if stop <= start:
        return
    lower = math.erf((start - mu - 0.5) * scale)
    for u in range(start, stop):
        upper = math.erf((u - mu + 0.5) * scale)
        out[u - start] = 0.5 * (upper - lower)
        lower = upper


_LEVEL_BINS = 64  # histogram bins that narrow the median search of the annulus values


@njit(cache=True, nogil=True)
def _median_and_neighbours_plain(values, n):
    """:func:`_median_and_neighbours` by a quickselect over all values (any values, NaN too)."""
    m = select_kth(values, n, n // 2)
    below, ties, lower, upper = _neighbours(values, n, m)
    return m, below, ties, lower, upper


@njit(cache=True, nogil=True)
def _neighbours(values, n, m):
    """How many of ``values[:n]`` are < m and == m, the largest < m and the smallest > m (branch-free)."""
    below = 0
    ties = 0
    lower = -np.inf
    upper = np.inf
    for i in range(n):
        v = values[i]
        below += v < m
        ties += v == m
        lower = max(lower, v if v < m else -np.inf)
        upper = min(upper, v if v > m else np.inf)
    return below, ties, lower, upper


@njit(cache=True, nogil=True)
def _median_and_neighbours(values, n, work):
    """The (n//2)-th smallest of ``values[:n]`` and the facts the tie rule needs.

    Returns ``(m, below, ties, lower, upper)``: m; how many values are < m and
    == m; the largest value < m (-inf if none) and the smallest > m (inf if
    none). Exact, like a full sort: the values are first binned (the bin index
    is monotonic in the value, so ties share a bin) and only the bin holding m
    is searched, which avoids most of the unpredictable branches of a
    quickselect over all n values. ``work`` is an int64 array of length
    >= n + ``_LEVEL_BINS``; ``values[:n]`` is reordered.
    """
    k = n // 2
    lo = np.inf
    hi = -np.inf
    finite = True
    for i in range(n):
        v = values[i]
        finite &= math.isfinite(v)
        lo = min(lo, v)
        hi = max(hi, v)
    n_bins = _LEVEL_BINS
    scale = n_bins / (hi - lo) if finite and hi > lo else 0.0
    if not (finite and 0.0 < scale < np.inf):
        return _median_and_neighbours_plain(values, n)
    counts = work[n : n + n_bins]
    counts[:] = 0
    for i in range(n):
        j = min(int((values[i] - lo) * scale), n_bins - 1)
        work[i] = j
        counts[j] += 1
    before = 0
    t = 0
    while before + counts[t] <= k:
        before += counts[t]
        t += 1
    size = 0
    for i in range(n):  # bin t's values to the front
        if work[i] == t:
            values[i], values[size] = values[size], values[i]
            size += 1
    m = select_kth(values, size, k - before)
    below, ties, lower, upper = _neighbours(values, n, m)
    return m, below, ties, lower, upper


@njit(cache=True, nogil=True)
def annulus_level(values, n, read_variance, work):
    """Background per pixel from annulus values: median, tie-aware, skew-corrected.

    The median of ``values[:n]`` (reordered in place; ``work`` is an int64
    array of length >= n + ``_LEVEL_BINS``). When several values tie at the median
    (integer-valued data), they are spread uniformly over their grid step
    ``h`` (the gap to the nearest other value) and the median is
    interpolated: ``m + h ((n/2 - below)/ties - 1/2)``. Then the Poisson
    skewness term ``min(b / (6 (b + read_variance)), b)``, ``b = max(median, 0)``,
    is added: it turns the median of Poisson(+Gaussian) pixels into their mean.
    """
    m, below, ties, lower, upper = _median_and_neighbours(values, n, work)
    if ties >= 2:
        step = min(m - lower, upper - m)
        if not math.isfinite(step):
            step = 0.0
        median = m + step * ((0.5 * n - below) / ties - 0.5)
    elif n % 2 == 0:
        median = 0.5 * (m + lower)
    else:
        median = m
    b = max(median, 0.0)
    if b + read_variance > 0.0:
        median += min(b / (6.0 * (b + read_variance)), b)
    return median


@njit(cache=True, nogil=True)
def integrate_range(
    image,
    centers,
    shift_x,
    shift_y,
    aperture_radius,
    inner_radius,
    outer_radius,
    sigma,
    psf_half,
    read_variance,
    min_annulus,
    scratch,
    psf_cols,
    start,
    stop,
    intensity,
    background,
    weighted,
    intensity_variance,
    weighted_variance,
):
    """Aperture and PSF-weighted photometry of spots ``start..stop-1`` (see ``integrate.py``).

    Per spot i at ``(x, y) = centers[i] + (shift_x, shift_y)``:

    - background ``b``: :func:`annulus_level` of the pixels whose centre is at
      distance ``inner_radius..outer_radius`` (inclusive); fewer than
      ``min_annulus`` of them inside the image -> all outputs NaN;
    - aperture: ``w`` = exact pixel area inside the disc ``aperture_radius``;
      ``intensity = sum w d - b sum w``; variance
      ``max(I, 0) + (b + rv) (sum w^2 + (sum w)^2 pi / (2 n_annulus))``;
    - weighted: ``p`` = pixel-integrated Gaussian (unit integral) over the
      (2 psf_half + 1)^2 box around the nearest pixel;
      ``weighted = sum p (d - b) / sum p^2``; variance
      ``(N sum p^3 + (b + rv) sum p^2 + (b + rv)(sum p)^2 pi/(2 n_annulus)) / (sum p^2)^2``
      with ``N = max(weighted, 0)``, ``b`` floored at 0 in variances.

    Pixels outside the image are skipped. ``scratch`` holds the annulus
    pixels, ``psf_cols`` (2 psf_half + 1) the per-column PSF factors.
    """
    height, width = image.shape
    level_work = np.empty(scratch.shape[0] + _LEVEL_BINS, dtype=np.int64)
    side = 2 * int(math.ceil(aperture_radius + 0.5)) + 3  # pixel edges of the aperture box, with a margin
    edges_x = np.empty(side)
    edges_y = np.empty(side)
    edge_work = np.empty((5, side))
    psf_rows = np.empty(psf_cols.shape[0])
    erf_scale = 1.0 / (math.sqrt(2.0) * sigma)
    r_in2 = inner_radius * inner_radius
    r_out2 = outer_radius * outer_radius
    for i in range(start, stop):
        x = centers[i, 0] + shift_x
        y = centers[i, 1] + shift_y
        intensity[i] = np.nan
        background[i] = np.nan
        weighted[i] = np.nan
        intensity_variance[i] = np.nan
        weighted_variance[i] = np.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        r0 = max(0, int(math.ceil(y - outer_radius)))
        r1 = min(height - 1, int(math.floor(y + outer_radius)))
        c0 = max(0, int(math.ceil(x - outer_radius)))
        c1 = min(width - 1, int(math.floor(x + outer_radius)))
        n_ann = _gather_annulus(image, x, y, r_in2, r_out2, r0, r1, c0, c1, scratch)
        if n_ann < min_annulus:
            continue
        b = annulus_level(scratch, n_ann, read_variance, level_work)
        noise = max(b, 0.0) + read_variance
        bg_share = math.pi / (2.0 * n_ann)

        r0 = max(0, int(math.ceil(y - aperture_radius - 0.5)))
        r1 = min(height - 1, int(math.floor(y + aperture_radius + 0.5)))
        c0 = max(0, int(math.ceil(x - aperture_radius - 0.5)))
        c1 = min(width - 1, int(math.floor(x + aperture_radius + 0.5)))
        sw, sw2, swd = _aperture_sums(image, x, y, aperture_radius, r0, r1, c0, c1, edges_x, edges_y, edge_work)
        total = swd - b * sw
        intensity[i] = total
        background[i] = b
        intensity_variance[i] = max(total, 0.0) + noise * (sw2 + sw * sw * bg_share)

        cx = int(math.floor(x + 0.5))
        cy = int(math.floor(y + 0.5))
        c0 = max(0, cx - psf_half)
        c1 = min(width, cx + psf_half + 1)
        r0 = max(0, cy - psf_half)
        r1 = min(height, cy + psf_half + 1)
        _pixel_fractions(c0, c1, x, erf_scale, psf_cols)
        _pixel_fractions(r0, r1, y, erf_scale, psf_rows)
        sp = 0.0
        spp = 0.0
        sppp = 0.0
        spd = 0.0
        for k in range(r1 - r0):
            py = psf_rows[k]
            row = image[r0 + k, c0:c1]  # a view indexed from 0: no negative-index checks
            for j in range(c1 - c0):
                p = py * psf_cols[j]
                sp += p
                spp += p * p
                sppp += p * p * p
                spd += p * (row[j] - b)
        if spp > 0.0:
            n_hat = spd / spp
            weighted[i] = n_hat
            weighted_variance[i] = (max(n_hat, 0.0) * sppp + noise * spp + noise * sp * sp * bg_share) / (spp * spp)


@njit(cache=True, nogil=True, parallel=True)
def integrate_spots_parallel(
    image,
    centers,
    shift_x,
    shift_y,
    aperture_radius,
    inner_radius,
    outer_radius,
    sigma,
    psf_half,
    read_variance,
    min_annulus,
    n_scratch,
    intensity,
    background,
    weighted,
    intensity_variance,
    weighted_variance,
):
    """:func:`integrate_range` over all spots in blocks spread over numba's threads (same results).

    Each block gets its own work buffers (``n_scratch`` annulus values).
    """
    n_spots = centers.shape[0]
    for block in prange((n_spots + _SPOTS_PER_BLOCK - 1) // _SPOTS_PER_BLOCK):
        start = block * _SPOTS_PER_BLOCK
        scratch = np.empty(n_scratch)
        psf_cols = np.empty(2 * psf_half + 1)
        integrate_range(
            image,
            centers,
            shift_x,
            shift_y,
            aperture_radius,
            inner_radius,
            outer_radius,
            sigma,
            psf_half,
            read_variance,
            min_annulus,
            scratch,
            psf_cols,
            start,
            min(start + _SPOTS_PER_BLOCK, n_spots),
            intensity,
            background,
            weighted,
            intensity_variance,
            weighted_variance,
        )
