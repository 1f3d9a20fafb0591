"""Numba kernels for spot detection (numpy, numba and math only).

All kernels write into arrays the caller allocated. Images are (H, W),
x = column, y = row, pixel centres at integers.
"""

import math

import numpy as np
from numba import njit

from plstream.analysis._shared_kernels import delta_erf, select_kth


@njit(cache=True, nogil=True)
def tile_medians(image, n_map, row_edges, col_edges, stride, out, buf):
    """Median of each tile, from every ``stride``-th row and column (a quick robust level).

    Tile (ty, tx) spans rows ``row_edges[ty]:row_edges[ty+1]`` and the matching
    columns; pixels with ``n_map <= 0`` (never observed) are ignored (a tile
    whose sampled pixels are all unobserved is sampled fully). For an even
    count the upper median is taken. NaN for a tile without observed pixels.
    ``buf`` is (number of tile columns, pixels of the largest tile).
    """
    n_tx = col_edges.size - 1
    counts = np.zeros(n_tx, dtype=np.int64)
    for ty in range(row_edges.size - 1):  # row-major gathers of one band of tiles
        counts[:] = 0
        for r in range(row_edges[ty], row_edges[ty + 1], stride):
            for tx in range(n_tx):
                for c in range(col_edges[tx], col_edges[tx + 1], stride):
                    if n_map[r, c] > 0:
                        buf[tx, counts[tx]] = image[r, c]
                        counts[tx] += 1
        for tx in range(n_tx):
            k = counts[tx]
            if k == 0:
                for r in range(row_edges[ty], row_edges[ty + 1]):
                    for c in range(col_edges[tx], col_edges[tx + 1]):
                        if n_map[r, c] > 0:
                            buf[tx, k] = image[r, c]
                            k += 1
            out[ty, tx] = select_kth(buf[tx], k, k // 2) if k > 0 else np.nan


@njit(cache=True, nogil=True)
def tile_clipped_means(image, reference, n_map, read_variance, row_edges, col_edges, clip, rounds, out):
    """Sigma-clipped mean of ``image - reference`` in each tile (spots clipped away).

    Starting from 0, pixels farther than ``clip`` noise SDs from the centre
    are dropped and the centre becomes the mean of the rest (``rounds``
    times). The noise SD of a pixel is ``sqrt(max(reference + read_variance,
    1/n) / n)`` photons. Pixels with ``n_map <= 0`` are ignored; a tile keeping
    none gets 0.
    """
    clip2 = clip * clip
    n_tx = col_edges.size - 1
    width = image.shape[1]
    col_tile = np.empty(width, dtype=np.int64)
    for tx in range(n_tx):
        col_tile[col_edges[tx] : col_edges[tx + 1]] = tx
    centre = np.empty(n_tx)
    total = np.empty(n_tx)
    kept = np.empty(n_tx)
    for ty in range(row_edges.size - 1):  # row-major sweeps of one band of tiles (cache friendly)
        centre[:] = 0.0
        for _ in range(rounds):
            total[:] = 0.0
            kept[:] = 0.0
            for r in range(row_edges[ty], row_edges[ty + 1]):
                for c in range(width):
                    tx = col_tile[c]
                    n = n_map[r, c]
                    d = image[r, c] - reference[r, c] - centre[tx]
                    # n > 0 and |d| <= clip * sqrt(max(level, 1/n) / n), without divisions
                    if n > 0 and d * d * n * n <= clip2 * max((reference[r, c] + read_variance) * n, 1.0):
                        total[tx] += d
                        kept[tx] += 1.0
            for tx in range(n_tx):
                if kept[tx] > 0:
                    centre[tx] += total[tx] / kept[tx]
        out[ty, :] = centre


@njit(cache=True, nogil=True)
def cubic_upsample(grid, row_index, row_weight, col_index, col_weight, tmp, out):
    """Separable 4-tap interpolation of a small grid onto the image.

    ``out[r, c] = sum_a sum_b row_weight[r, a] col_weight[c, b]
    grid[row_index[r] + a, col_index[c] + b]``; ``tmp`` is (grid rows, W).
    """
    height, width = out.shape
    for j in range(grid.shape[0]):  # along the columns first: a few grid rows only
        for c in range(width):
            j0 = col_index[c]
            acc = 0.0
            for b in range(4):
                acc += col_weight[c, b] * grid[j, j0 + b]
            tmp[j, c] = acc
    for r in range(height):  # then whole rows: contiguous, vectorizable
        i0 = row_index[r]
        y = out[r]
        w0 = row_weight[r, 0]
        w1 = row_weight[r, 1]
        w2 = row_weight[r, 2]
        w3 = row_weight[r, 3]
        t0 = tmp[i0]
        t1 = tmp[i0 + 1]
        t2 = tmp[i0 + 2]
        t3 = tmp[i0 + 3]
        for c in range(width):
            y[c] = w0 * t0[c] + w1 * t1[c] + w2 * t2[c] + w3 * t3[c]


@njit(cache=True, nogil=True)
def _taps_row(x, taps, y):
    """``y = x ⋆ taps`` along one row (symmetric odd ``taps``, zero padding)."""
    half = taps.size // 2
    width = x.size
    for c in range(width):
        y[c] = taps[half] * x[c]
    for k in range(1, half + 1):
        tk = taps[half + k]
        for c in range(k, width):
            y[c] += tk * x[c - k]
        for c in range(width - k):
            y[c] += tk * x[c + k]


@njit(cache=True, nogil=True)
def _box_row(x, box_half, prefix, y):
    """``y[c] = sum of x[c - box_half .. c + box_half]`` inside the row."""
    width = x.size
    total = 0.0
    prefix[0] = 0.0
    for c in range(width):
        total += x[c]
        prefix[c + 1] = total
    for c in range(width):
        y[c] = prefix[min(width, c + box_half + 1)] - prefix[max(0, c - box_half)]


@njit(cache=True, nogil=True)
def _taps_col(rows, taps, r, y):
    """``y = sum_k taps[k] rows[r + k - half]`` over the rows inside the image."""
    half = taps.size // 2
    height = rows.shape[0]
    a = rows[r]
    for c in range(y.size):
        y[c] = taps[half] * a[c]
    for k in range(1, half + 1):
        tk = taps[half + k]
        if r - k >= 0:
            a = rows[r - k]
            for c in range(y.size):
                y[c] += tk * a[c]
        if r + k < height:
            a = rows[r + k]
            for c in range(y.size):
                y[c] += tk * a[c]


@njit(cache=True, nogil=True)
def _box_col_step(rows, box_half, r, acc):
    """Running column box sum: ``acc`` holds rows r-B..r+B; r = -1 initializes it for r = 0."""
    height = rows.shape[0]
    if r < 0:
        acc[:] = 0.0
        for rr in range(min(box_half, height - 1) + 1):
            acc += rows[rr]
        return
    if r + box_half + 1 < height:
        acc += rows[r + box_half + 1]
    if r - box_half >= 0:
        acc -= rows[r - box_half]


@njit(cache=True, nogil=True)
def correlate_gauss_box(src, taps, box_half, out_gauss, out_box, row_gauss, row_box):
    """Zero-padded correlations with a symmetric separable kernel and with a box.

    ``out_gauss = src ⋆ (taps ⊗ taps)`` (``taps`` symmetric, odd length) and
    ``out_box = src ⋆ ones((2 box_half + 1)^2)``, counting pixels outside the
    image as 0. ``row_gauss`` and ``row_box`` are (H, W) work arrays.
    """
    height, width = src.shape
    prefix = np.empty(width + 1)
    for r in range(height):
        _taps_row(src[r], taps, row_gauss[r])
        _box_row(src[r], box_half, prefix, row_box[r])
    acc = np.empty(width)
    _box_col_step(row_box, box_half, -1, acc)
    for r in range(height):
        _taps_col(row_gauss, taps, r, out_gauss[r])
        out_box[r] = acc
        _box_col_step(row_box, box_half, r, acc)


@njit(cache=True, nogil=True)
def kernel_energy(n_map, taps, box_half, unseen_weight, sums, q, rows_g, rows_g2, rows_box):
    """``q = sum_j k'_j^2 / n_j`` for a per-pixel frame-count map (float64 work arrays).

    ``k'`` is the zero-mean kernel of :func:`significance` (mean
    ``sums[0, r] * sums[3, c]`` over the in-image box); pixels with
    ``n <= 0`` weigh ``unseen_weight``. Computed as
    ``C[g^2](w) - 2 mu C[g](w) + mu^2 C[box](w)``, ``w = 1/n``.
    """
    height, width = n_map.shape
    taps2 = taps * taps
    w = np.empty(width)
    prefix = np.empty(width + 1)
    for r in range(height):
        for c in range(width):
            n = n_map[r, c]
            w[c] = 1.0 / n if n > 0 else unseen_weight
        _taps_row(w, taps, rows_g[r])
        _taps_row(w, taps2, rows_g2[r])
        _box_row(w, box_half, prefix, rows_box[r])
    acc = np.empty(width)
    yg = np.empty(width)
    yg2 = np.empty(width)
    _box_col_step(rows_box, box_half, -1, acc)
    for r in range(height):
        _taps_col(rows_g, taps, r, yg)
        _taps_col(rows_g2, taps2, r, yg2)
        for c in range(width):
            mu = sums[0, r] * sums[3, c]
            q[r, c] = yg2[c] - 2.0 * mu * yg[c] + mu * mu * acc[c]
        _box_col_step(rows_box, box_half, r, acc)


@njit(cache=True, nogil=True)
def significance(f_gauss, f_box, sums, q_map, background, n_map, read_variance, sum_k3, threshold, z, z_test):
    """Zero-mean matched-filter significance, and its skewness-corrected twin.

    The kernel at pixel (r, c) is the Gaussian minus its mean over the part of
    the box inside the image, ``mu = sums[0, r] * sums[3, c]``, so
    ``F = f_gauss - mu * f_box``. ``sums`` rows 0-2 hold, per image row, the
    mean Gaussian tap, the sum of squared taps and the box length inside the
    image; rows 3-5 the same per column. The H0 variance of F is
    ``V = max(bg + read_variance, 1/n) * q`` with ``q = sum_j k'_j^2 / n_j``:
    ``q_map`` when it has the image's shape, else (uniform n)
    ``(b_r b_c - mu^2 len_r len_c) / n``. Writes ``z = F / sqrt(V)`` and, where
    ``z >= threshold``, ``z_test = z - gamma/6 (threshold^2 - 1)`` with gamma
    the Poisson skewness of F, ``sum_k3 * bg / n^2 / V^1.5`` (capped at 1)
    (Cornish-Fisher; elsewhere ``z_test = z``).
    """
    height, width = z.shape
    use_map = q_map.shape[0] == height and q_map.shape[1] == width
    tail = max(threshold * threshold - 1.0, 0.0) / 6.0
    for r in range(height):
        for c in range(width):
            n = n_map[r, c]
            mu = sums[0, r] * sums[3, c]
            if use_map:
                q = q_map[r, c]
            else:
                q = (sums[1, r] * sums[4, c] - mu * mu * sums[2, r] * sums[5, c]) / n
            if n <= 0 or q <= 0:
                z[r, c] = 0.0
                z_test[r, c] = 0.0
                continue
            bg = background[r, c]
            var = max(bg + read_variance, 1.0 / n) * q
            sd = math.sqrt(var)
            zc = (f_gauss[r, c] - mu * f_box[r, c]) / sd
            z[r, c] = zc
            if zc >= threshold:
                gamma = min(sum_k3 * max(bg, 0.0) / (n * n) / (var * sd), 1.0)
                zc -= gamma * tail
            z_test[r, c] = zc


@njit(cache=True, nogil=True)
def local_maxima(z, z_test, threshold, radius, border, rows, cols):
    """Pixels that are the maximum of z in their (2 radius + 1)^2 window and significant.

    A pixel qualifies when ``z_test >= threshold`` and it lies at least
    ``border`` pixels from the edge. Ties go to the pixel first in raster
    order. Writes row and column indices; returns how many (``rows`` must hold
    ``ceil(H/(radius+1)) * ceil(W/(radius+1))``).
    """
    height, width = z.shape
    count = 0
    for r in range(border, height - border):
        for c in range(border, width - border):
            if z_test[r, c] < threshold:
                continue
            zc = z[r, c]
            is_max = True
            for rr in range(max(0, r - radius), min(height, r + radius + 1)):
                for cc in range(max(0, c - radius), min(width, c + radius + 1)):
                    zq = z[rr, cc]
                    if zq > zc or (zq == zc and (rr < r or (rr == r and cc < c))):
                        is_max = False
                        break
                if not is_max:
                    break
            if is_max:
                rows[count] = r
                cols[count] = c
                count += 1
    return count


@njit(cache=True, nogil=True)
def refine_centroids(data, rows, cols, sigma, half, max_iter, xy):
    """Gaussian-weighted centroid, iterated to its fixed point (the spot centre).

    Weights ``exp(-d^2 / 2 sigma^2)`` around the current estimate over a
    (2 half + 1)^2 window of background-subtracted ``data``; each step moves
    by the centroid offset times ``(2 sigma^2 + 1/12) / sigma^2``, which is
    exact for a pixel-integrated Gaussian spot. The estimate stays within 1 px
    of the starting pixel. Writes ``xy[i] = (x, y)``.
    """
    height, width = data.shape
    inv2s2 = 0.5 / (sigma * sigma)
    step_gain = (2.0 * sigma * sigma + 1.0 / 12.0) / (sigma * sigma)
    wx = np.empty(2 * half + 1)
    for i in range(rows.size):
        x0 = float(cols[i])
        y0 = float(rows[i])
        x = x0
        y = y0
        for _ in range(max_iter):
            cx = int(math.floor(x + 0.5))
            cy = int(math.floor(y + 0.5))
            c0 = max(0, cx - half)
            c1 = min(width, cx + half + 1)
            for cc in range(c0, c1):
                wx[cc - c0] = math.exp(-((cc - x) ** 2) * inv2s2)
            sw = 0.0
            sx = 0.0
            sy = 0.0
            for rr in range(max(0, cy - half), min(height, cy + half + 1)):
                dy = rr - y
                wy = math.exp(-dy * dy * inv2s2)
                rw = 0.0
                rx = 0.0
                for cc in range(c0, c1):
                    wv = wx[cc - c0] * data[rr, cc]
                    rw += wv
                    rx += wv * (cc - x)
                sw += wy * rw
                sx += wy * rx
                sy += wy * rw * dy
            if sw <= 0.0:
                break
            nx = min(max(x + step_gain * sx / sw, x0 - 1.0), x0 + 1.0)
            ny = min(max(y + step_gain * sy / sw, y0 - 1.0), y0 + 1.0)
            moved = (nx - x) ** 2 + (ny - y) ** 2
            x = nx
            y = ny
            if moved < 1e-8:
                break
        xy[i, 0] = x
        xy[i, 1] = y


@njit(cache=True, nogil=True)
def psf_photons(data, xy, sigma, half, px, out):
    """Photons of each spot: least-squares amplitude of the PSF plus a local constant.

    ``p`` is the pixel-integrated Gaussian at ``xy[i]`` (unit integral) over a
    (2 half + 1)^2 box around the nearest pixel (pixels outside the image are
    skipped); fitting ``d = N p + b`` gives ``N = sum p' d / sum p'^2`` with
    ``p' = p - mean(p)``, so a residual background offset does not bias N.
    ``px`` is a work array of length 2 half + 1.
    """
    height, width = data.shape
    for i in range(xy.shape[0]):
        x = xy[i, 0]
        y = xy[i, 1]
        cx = int(math.floor(x + 0.5))
        cy = int(math.floor(y + 0.5))
        c0 = max(0, cx - half)
        c1 = min(width, cx + half + 1)
        for cc in range(c0, c1):
            px[cc - c0] = delta_erf(cc, x, sigma)
        n = 0
        sp = 0.0
        sd = 0.0
        spd = 0.0
        spp = 0.0
        for rr in range(max(0, cy - half), min(height, cy + half + 1)):
            py = delta_erf(rr, y, sigma)
            for cc in range(c0, c1):
                p = py * px[cc - c0]
                d = data[rr, cc]
                n += 1
                sp += p
                sd += d
                spd += p * d
                spp += p * p
        denominator = spp - sp * sp / n if n > 0 else 0.0
        out[i] = (spd - sp * sd / n) / denominator if denominator > 0 else np.nan
