"""Numba kernels for per-spot photometry (numpy, numba and math only).

Images are (H, W), x = column, y = row, pixel (r, c) spans
``c - 1/2 .. c + 1/2`` by ``r - 1/2 .. r + 1/2``. All outputs are written into
arrays the caller allocated.
"""

import math

import numpy as np
from numba import njit

from plstream.analysis._shared_kernels import delta_erf, select_kth


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
def annulus_level(values, n, read_variance):
    """Background per pixel from annulus values: median, tie-aware, skew-corrected.

    The median of ``values[:n]`` (reordered in place). When several values tie
    at the median (integer-valued data), they are spread uniformly over their
    grid step ``h`` (the gap to the nearest other value) and the median is
    interpolated: ``m + h ((n/2 - below)/ties - 1/2)``. Then the Poisson
    skewness term ``min(b / (6 (b + read_variance)), b)``, ``b = max(median, 0)``,
    is added: it turns the median of Poisson(+Gaussian) pixels into their mean.
    """
    m = select_kth(values, n, n // 2)
    below = 0
    ties = 0
    lower = -np.inf
    upper = np.inf
    for i in range(n):
        v = values[i]
        if v < m:
            below += 1
            lower = max(lower, v)
        elif v == m:
            ties += 1
        else:
            upper = min(upper, v)
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
def integrate_spots(
    image,
    centers,
    aperture_radius,
    inner_radius,
    outer_radius,
    sigma,
    psf_half,
    read_variance,
    min_annulus,
    scratch,
    psf_cols,
    intensity,
    background,
    weighted,
    intensity_variance,
    weighted_variance,
):
    """Aperture and PSF-weighted photometry of each spot (see ``integrate.py``).

    Per spot i at ``centers[i] = (x, y)``:

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
    r_in2 = inner_radius * inner_radius
    r_out2 = outer_radius * outer_radius
    for i in range(centers.shape[0]):
        x = centers[i, 0]
        y = centers[i, 1]
        intensity[i] = np.nan
        background[i] = np.nan
        weighted[i] = np.nan
        intensity_variance[i] = np.nan
        weighted_variance[i] = np.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        n_ann = 0
        r0 = max(0, int(math.ceil(y - outer_radius)))
        r1 = min(height - 1, int(math.floor(y + outer_radius)))
        c0 = max(0, int(math.ceil(x - outer_radius)))
        c1 = min(width - 1, int(math.floor(x + outer_radius)))
        for r in range(r0, r1 + 1):
            dy2 = (r - y) * (r - y)
            for c in range(c0, c1 + 1):
                d2 = (c - x) * (c - x) + dy2
                if r_in2 <= d2 <= r_out2:
                    scratch[n_ann] = image[r, c]
                    n_ann += 1
        if n_ann < min_annulus:
            continue
        b = annulus_level(scratch, n_ann, read_variance)
        noise = max(b, 0.0) + read_variance
        bg_share = math.pi / (2.0 * n_ann)

        sw = 0.0
        sw2 = 0.0
        swd = 0.0
        r0 = max(0, int(math.ceil(y - aperture_radius - 0.5)))
        r1 = min(height - 1, int(math.floor(y + aperture_radius + 0.5)))
        c0 = max(0, int(math.ceil(x - aperture_radius - 0.5)))
        c1 = min(width - 1, int(math.floor(x + aperture_radius + 0.5)))
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                w = pixel_overlap(c - x, r - y, aperture_radius)
                if w > 0.0:
                    sw += w
                    sw2 += w * w
                    swd += w * image[r, c]
        total = swd - b * sw
        intensity[i] = total
        background[i] = b
        intensity_variance[i] = max(total, 0.0) + noise * (sw2 + sw * sw * bg_share)

        cx = int(math.floor(x + 0.5))
        cy = int(math.floor(y + 0.5))
        c0 = max(0, cx - psf_half)
        c1 = min(width, cx + psf_half + 1)
        for c in range(c0, c1):
            psf_cols[c - c0] = delta_erf(c, x, sigma)
        sp = 0.0
        spp = 0.0
        sppp = 0.0
        spd = 0.0
        for r in range(max(0, cy - psf_half), min(height, cy + psf_half + 1)):
            py = delta_erf(r, y, sigma)
            for c in range(c0, c1):
                p = py * psf_cols[c - c0]
                sp += p
                spp += p * p
                sppp += p * p * p
                spd += p * (image[r, c] - b)
        if spp > 0.0:
            n_hat = spd / spp
            weighted[i] = n_hat
            weighted_variance[i] = (
                max(n_hat, 0.0) * sppp + noise * spp + noise * sp * sp * bg_share
            ) / (spp * spp)
