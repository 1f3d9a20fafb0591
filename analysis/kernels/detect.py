"""Numba kernels for spot detection (numpy, numba and math only).

All kernels write into arrays the caller allocated. Images are (H, W),
x = column, y = row, pixel centres at integers. Kernels over the image cut
the rows into blocks of ``ROWS_PER_BLOCK`` (running sums restart at each
block) and loop over the blocks with ``prange``; each is compiled twice
(:mod:`.twins`): serial, and a ``_parallel`` twin that spreads the blocks
over numba's threads, with identical results. The background map's kernels
are in ``background``.
"""

import math

import numpy as np
from numba import njit, prange

from plstream.analysis.kernels.shared import ROWS_PER_BLOCK, delta_erf, row_blocks
from plstream.analysis.kernels.twins import serial_and_parallel


# ----------------------------------------------------------------------------- input checks
@njit(cache=True, nogil=True)
def _stats_rows(image, n_map, start, stop, out):
    """out = [non-finite image pixels, bad n (non-finite or < 0), n > 0 count, min n > 0, max n]."""
    bad_image = 0
    bad_n = 0
    positive = 0
    n_min = np.inf
    n_max = -np.inf
    for r in range(start, stop):  # branch-free
        pixels = image[r]
        frames = n_map[r]
        for c in range(image.shape[1]):
            bad_image += not math.isfinite(pixels[c])
            n = np.float64(frames[c])
            ok = (n >= 0.0) & (n < np.inf)
            seen = ok & (n > 0.0)
            bad_n += not ok
            positive += seen
            n_min = min(n_min, n if seen else np.inf)
            n_max = max(n_max, n if ok else -np.inf)
    out[0] = bad_image
    out[1] = bad_n
    out[2] = positive
    out[3] = n_min
    out[4] = n_max


@njit(cache=True, nogil=True)
def _reduce_stats(per_block):
    out = np.zeros(5)
    out[3] = np.inf
    out[4] = -np.inf
    for b in range(per_block.shape[0]):
        out[0] += per_block[b, 0]
        out[1] += per_block[b, 1]
        out[2] += per_block[b, 2]
        out[3] = min(out[3], per_block[b, 3])
        out[4] = max(out[4], per_block[b, 4])
    return out


def map_stats(image, n_map):
    """One pass over the inputs of detection: ``[non-finite image pixels, invalid n, pixels with n > 0,
    smallest n > 0, largest n]`` (float64; n may be any real or integer type)."""
    nb = row_blocks(image.shape[0])
    per_block = np.empty((nb, 5))
    for b in prange(nb):
        _stats_rows(image, n_map, b * ROWS_PER_BLOCK, min((b + 1) * ROWS_PER_BLOCK, image.shape[0]), per_block[b])
    return _reduce_stats(per_block)


map_stats, map_stats_parallel = serial_and_parallel(map_stats, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def uniform_core(n_map, n_core):
    """A rectangle where every pixel saw ``n_core`` frames: ``(r0, r1, c0, c1)``, rows r0..r1-1.

    Found along the centre column and centre row, then checked pixel by
    pixel; ``(0, 0, 0, 0)`` when there is no such rectangle. For a map built
    from shifted frames (all frames cover a central rectangle) it is that
    rectangle, and every pixel outside it is in one of the four bands around it.
    """
    height, width = n_map.shape
    r0 = 0
    c_mid = width // 2
    while r0 < height and n_map[r0, c_mid] != n_core:
        r0 += 1
    r1 = r0
    while r1 < height and n_map[r1, c_mid] == n_core:
        r1 += 1
    if r1 <= r0:
        return 0, 0, 0, 0
    r_mid = (r0 + r1) // 2
    c0 = 0
    while c0 < width and n_map[r_mid, c0] != n_core:
        c0 += 1
    c1 = c0
    while c1 < width and n_map[r_mid, c1] == n_core:
        c1 += 1
    for r in range(r0, r1):
        frames = n_map[r, c0:c1]
        other = 0
        for c in range(c1 - c0):  # branch-free count, so the loop vectorizes
            other += frames[c] != n_core
        if other:
            return 0, 0, 0, 0
    return r0, r1, c0, c1


@njit(cache=True, nogil=True)
def _taps_row(x, taps, y):
    """``y = x ⋆ taps`` along one row (symmetric odd ``taps``, zero padding).

    The shifted terms run over sub-views indexed from 0: numba then needs no
    negative-index check per element and the loops vectorize.
    """
    half = taps.size // 2
    width = x.size
    centre = taps[half]
    for c in range(width):
        y[c] = centre * x[c]
    for k in range(1, min(half, width - 1) + 1):
        tk = taps[half + k]
        n = width - k
        src = x[:n]  # y[c] += tk x[c - k], c >= k
        dst = y[k:]
        for c in range(n):
            dst[c] += tk * src[c]
        src = x[k:]  # y[c] += tk x[c + k], c < width - k
        dst = y[:n]
        for c in range(n):
            dst[c] += tk * src[c]


@njit(cache=True, nogil=True)
def _box_row(x, box_half, prefix, y):
    """``y[c] = sum of x[c - box_half .. c + box_half]`` inside the row."""
    width = x.size
    total = 0.0
    prefix[0] = 0.0
    for c in range(width):
        total += x[c]
        prefix[c + 1] = total
    inner_a = min(box_half, width)  # columns whose box reaches neither edge: inner_a..inner_b-1
    inner_b = max(inner_a, width - box_half - 1)
    for c in range(inner_a):
        y[c] = prefix[min(width, c + box_half + 1)] - prefix[max(0, c - box_half)]
    upper = prefix[inner_a + box_half + 1 :]  # sub-views indexed from 0: no negative-index checks
    lower = prefix[inner_a - box_half :]
    dst = y[inner_a:]
    for c in range(inner_b - inner_a):
        dst[c] = upper[c] - lower[c]
    for c in range(inner_b, width):
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
def _box_col_init(rows, box_half, r, acc):
    """``acc`` = sum of rows r-B..r+B inside the image (the running box sum at row r)."""
    height = rows.shape[0]
    acc[:] = 0.0
    for rr in range(max(0, r - box_half), min(height - 1, r + box_half) + 1):
        acc += rows[rr]


@njit(cache=True, nogil=True)
def _box_col_step(rows, box_half, r, acc):
    """Running column box sum: from rows r-B..r+B to rows r+1-B..r+1+B."""
    height = rows.shape[0]
    if r + box_half + 1 < height:
        acc += rows[r + box_half + 1]
    if r - box_half >= 0:
        acc -= rows[r - box_half]


@njit(cache=True, nogil=True)
def _gauss_box_rows(src, taps, box_half, row_gauss, row_box, start, stop):
    prefix = np.empty(src.shape[1] + 1)
    for r in range(start, stop):
        _taps_row(src[r], taps, row_gauss[r])
        _box_row(src[r], box_half, prefix, row_box[r])


@njit(cache=True, nogil=True)
def _gauss_box_cols(row_gauss, row_box, taps, box_half, out_gauss, out_box, start, stop):
    acc = np.empty(row_box.shape[1], dtype=row_box.dtype)
    _box_col_init(row_box, box_half, start, acc)
    for r in range(start, stop):
        _taps_col(row_gauss, taps, r, out_gauss[r])
        out_box[r] = acc
        _box_col_step(row_box, box_half, r, acc)


def correlate_gauss_box(src, taps, box_half, out_gauss, out_box, row_gauss, row_box):
    """Zero-padded correlations with a symmetric separable kernel and with a box.

    ``out_gauss = src ⋆ (taps ⊗ taps)`` (``taps`` symmetric, odd length) and
    ``out_box = src ⋆ ones((2 box_half + 1)^2)``, counting pixels outside the
    image as 0. ``row_gauss`` and ``row_box`` are (H, W) work arrays. The box
    sums run down each block of ``ROWS_PER_BLOCK`` rows.
    """
    height = src.shape[0]
    for b in prange(row_blocks(height)):
        _gauss_box_rows(
            src, taps, box_half, row_gauss, row_box, b * ROWS_PER_BLOCK, min((b + 1) * ROWS_PER_BLOCK, height)
        )
    for b in prange(row_blocks(height)):
        _gauss_box_cols(
            row_gauss,
            row_box,
            taps,
            box_half,
            out_gauss,
            out_box,
            b * ROWS_PER_BLOCK,
            min((b + 1) * ROWS_PER_BLOCK, height),
        )


correlate_gauss_box, correlate_gauss_box_parallel = serial_and_parallel(correlate_gauss_box, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def _energy_rows(n_map, taps, taps2, box_half, unseen_weight, rows_g, rows_g2, rows_box, start, stop):
    width = n_map.shape[1]
    w = np.empty(width)
    prefix = np.empty(width + 1)
    for r in range(start, stop):
        for c in range(width):
            n = np.float64(n_map[r, c])
            w[c] = 1.0 / n if n > 0 else unseen_weight
        _taps_row(w, taps, rows_g[r])
        _taps_row(w, taps2, rows_g2[r])
        _box_row(w, box_half, prefix, rows_box[r])


@njit(cache=True, nogil=True)
def _energy_cols(rows_g, rows_g2, rows_box, taps, taps2, box_half, sums, row_offset, col_offset, q, start, stop):
    width = rows_g.shape[1]
    acc = np.empty(width)
    yg = np.empty(width)
    yg2 = np.empty(width)
    _box_col_init(rows_box, box_half, start, acc)
    for r in range(start, stop):
        _taps_col(rows_g, taps, r, yg)
        _taps_col(rows_g2, taps2, r, yg2)
        for c in range(width):
            mu = sums[0, r + row_offset] * sums[3, c + col_offset]
            q[r, c] = yg2[c] - 2.0 * mu * yg[c] + mu * mu * acc[c]
        _box_col_step(rows_box, box_half, r, acc)


def kernel_energy(n_map, taps, box_half, unseen_weight, sums, row_offset, col_offset, q):
    """``q = sum_j k'_j^2 / n_j`` for a per-pixel frame-count map (float64).

    ``k'`` is the zero-mean kernel of :func:`significance` (mean
    ``sums[0, r] * sums[3, c]`` over the in-image box); pixels with
    ``n <= 0`` weigh ``unseen_weight``. Computed as
    ``C[g^2](w) - 2 mu C[g](w) + mu^2 C[box](w)``, ``w = 1/n``. ``n_map`` may
    be a crop of the image whose pixel (0, 0) is image pixel (``row_offset``,
    ``col_offset``); pixels beyond the crop are left out of the sums, so ``q``
    is exact only for crop pixels at least ``box_half`` from a cut edge.
    """
    height, width = n_map.shape
    taps2 = taps * taps
    rows_g = np.empty((height, width))
    rows_g2 = np.empty((height, width))
    rows_box = np.empty((height, width))
    for b in prange(row_blocks(height)):
        _energy_rows(
            n_map,
            taps,
            taps2,
            box_half,
            unseen_weight,
            rows_g,
            rows_g2,
            rows_box,
            b * ROWS_PER_BLOCK,
            min((b + 1) * ROWS_PER_BLOCK, height),
        )
    for b in prange(row_blocks(height)):
        _energy_cols(
            rows_g,
            rows_g2,
            rows_box,
            taps,
            taps2,
            box_half,
            sums,
            row_offset,
            col_offset,
            q,
            b * ROWS_PER_BLOCK,
            min((b + 1) * ROWS_PER_BLOCK, height),
        )


kernel_energy, kernel_energy_parallel = serial_and_parallel(kernel_energy, cache=True, nogil=True)


@njit(cache=True, nogil=True, error_model="numpy")
def _z_closed_form(
    f_gauss, f_box, sums, background, n_map, read_variance, sum_k3, threshold, r, c_start, c_stop, z, z_test
):
    """z and z_test of row r, columns c_start..c_stop-1, with q in closed form (uniform n).

    0 where n <= 0 or q <= 0. Branch-free (numpy error model: a division by 0
    gives inf/NaN, which is then masked), so the loop vectorizes.
    """
    s0 = sums[0, r]
    s1 = sums[1, r]
    s2 = sums[2, r]
    tail = max(threshold * threshold - 1.0, 0.0) / 6.0
    # views starting at c_start, indexed from 0: no negative-index checks, the loop vectorizes
    zr = z[r, c_start:]
    tr = z_test[r, c_start:]
    fg = f_gauss[r, c_start:]
    fb = f_box[r, c_start:]
    bg = background[r, c_start:]
    nr = n_map[r, c_start:]
    col_mean = sums[3, c_start:]
    col_sq = sums[4, c_start:]
    col_len = sums[5, c_start:]
    for c in range(max(c_stop - c_start, 0)):
        n = np.float64(nr[c])
        inv_n = 1.0 / n
        mu = s0 * col_mean[c]
        q = (s1 * col_sq[c] - mu * mu * s2 * col_len[c]) * inv_n
        b = bg[c]
        inv_sd = 1.0 / math.sqrt(max(b + read_variance, inv_n) * q)
        zc = (fg[c] - mu * fb[c]) * inv_sd
        gamma = min(sum_k3 * max(b, 0.0) * inv_n * inv_n * inv_sd * inv_sd * inv_sd, 1.0)
        valid = (n > 0.0) & (q > 0.0)
        zr[c] = zc if valid else 0.0
        tr[c] = (zc - gamma * tail if zc >= threshold else zc) if valid else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _z_mapped(
    f_gauss, f_box, sums, q_map, background, n_map, read_variance, sum_k3, threshold, r, c_start, c_stop, z, z_test
):
    """As :func:`_z_closed_form`, with q from ``q_map``."""
    s0 = sums[0, r]
    tail = max(threshold * threshold - 1.0, 0.0) / 6.0
    zr = z[r, c_start:]
    tr = z_test[r, c_start:]
    fg = f_gauss[r, c_start:]
    fb = f_box[r, c_start:]
    bg = background[r, c_start:]
    nr = n_map[r, c_start:]
    qr = q_map[r, c_start:]
    col_mean = sums[3, c_start:]
    for c in range(max(c_stop - c_start, 0)):
        n = np.float64(nr[c])
        inv_n = 1.0 / n
        mu = s0 * col_mean[c]
        q = qr[c]
        b = bg[c]
        inv_sd = 1.0 / math.sqrt(max(b + read_variance, inv_n) * q)
        zc = (fg[c] - mu * fb[c]) * inv_sd
        gamma = min(sum_k3 * max(b, 0.0) * inv_n * inv_n * inv_sd * inv_sd * inv_sd, 1.0)
        valid = (n > 0.0) & (q > 0.0)
        zr[c] = zc if valid else 0.0
        tr[c] = (zc - gamma * tail if zc >= threshold else zc) if valid else 0.0


@njit(cache=True, nogil=True)
def _significance_rows(
    f_gauss, f_box, sums, q_map, core, background, n_map, read_variance, sum_k3, threshold, z, z_test, start, stop
):
    width = z.shape[1]
    r0, r1, c0, c1 = core[0], core[1], core[2], core[3]
    for r in range(start, stop):
        lo = width
        hi = width
        if r0 <= r < r1 and c0 < c1:
            lo = c0
            hi = c1
        if lo > 0:
            _z_mapped(
                f_gauss, f_box, sums, q_map, background, n_map, read_variance, sum_k3, threshold, r, 0, lo, z, z_test
            )
        _z_closed_form(f_gauss, f_box, sums, background, n_map, read_variance, sum_k3, threshold, r, lo, hi, z, z_test)
        if hi < width:
            _z_mapped(
                f_gauss,
                f_box,
                sums,
                q_map,
                background,
                n_map,
                read_variance,
                sum_k3,
                threshold,
                r,
                hi,
                width,
                z,
                z_test,
            )


def significance(f_gauss, f_box, sums, q_map, core, background, n_map, read_variance, sum_k3, threshold, z, z_test):
    """Zero-mean matched-filter significance, and its skewness-corrected twin.

    The kernel at pixel (r, c) is the Gaussian minus its mean over the part of
    the box inside the image, ``mu = sums[0, r] * sums[3, c]``, so
    ``F = f_gauss - mu * f_box``. ``sums`` rows 0-2 hold, per image row, the
    mean Gaussian tap, the sum of squared taps and the box length inside the
    image; rows 3-5 the same per column. The H0 variance of F is
    ``V = max(bg + read_variance, 1/n) * q`` with ``q = sum_j k'_j^2 / n_j``:
    inside ``core = (r0, r1, c0, c1)`` (pixels whose whole box saw the same n)
    ``(b_r b_c - mu^2 len_r len_c) / n``, elsewhere ``q_map``. Writes
    ``z = F / sqrt(V)`` and, where ``z >= threshold``,
    ``z_test = z - gamma/6 (threshold^2 - 1)`` with gamma the Poisson skewness
    of F, ``sum_k3 * bg / n^2 / V^1.5`` (capped at 1) (Cornish-Fisher;
    elsewhere ``z_test = z``).
    """
    height = z.shape[0]
    for b in prange(row_blocks(height)):
        _significance_rows(
            f_gauss,
            f_box,
            sums,
            q_map,
            core,
            background,
            n_map,
            read_variance,
            sum_k3,
            threshold,
            z,
            z_test,
            b * ROWS_PER_BLOCK,
            min((b + 1) * ROWS_PER_BLOCK, height),
        )


significance, significance_parallel = serial_and_parallel(significance, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def _maxima_rows(z, z_test, threshold, radius, border, rows, cols, start, stop):
    height, width = z.shape
    count = 0
    chunk = 32
    for r in range(max(start, border), min(stop, height - border)):
        zt = z_test[r]
        for c_first in range(border, width - border, chunk):
            c_last = min(c_first + chunk, width - border)
            hits = 0
            for c in range(c_first, c_last):  # vectorized test of a chunk: most hold no candidate
                hits += zt[c] >= threshold
            if hits == 0:
                continue
            count = _maxima_in_chunk(z, z_test, threshold, radius, r, c_first, c_last, rows, cols, count)
    return count


@njit(cache=True, nogil=True)
def _maxima_in_chunk(z, z_test, threshold, radius, r, c_first, c_last, rows, cols, count):
    """:func:`_maxima_rows` for pixels (r, c_first..c_last-1); appends at ``count``, returns the new count."""
    height, width = z.shape
    for c in range(c_first, c_last):
        if z_test[r, c] < threshold:
            continue
        zc = z[r, c]
        # the 8 neighbours first: most candidates next to a peak lose to one of them
        is_max = True
        for rr in range(max(0, r - 1), min(height, r + 2)):
            for cc in range(max(0, c - 1), min(width, c + 2)):
                zq = z[rr, cc]
                if zq > zc or (zq == zc and (rr < r or (rr == r and cc < c))):
                    is_max = False
            if not is_max:
                break
        if not is_max:
            continue
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
def _gather_maxima(block_rows, block_cols, block_count, rows, cols):
    count = 0
    for b in range(block_count.shape[0]):
        for k in range(block_count[b]):
            rows[count] = block_rows[b, k]
            cols[count] = block_cols[b, k]
            count += 1
    return count


def local_maxima(z, z_test, threshold, radius, border, rows, cols):
    """Pixels that are the maximum of z in their (2 radius + 1)^2 window and significant.

    A pixel qualifies when ``z_test >= threshold`` and it lies at least
    ``border`` pixels from the edge. Ties go to the pixel first in raster
    order. Writes row and column indices in raster order; returns how many
    (``rows`` must hold ``ceil(H/(radius+1)) * ceil(W/(radius+1))``).
    """
    height, width = z.shape
    nb = row_blocks(height)
    cap = -(-ROWS_PER_BLOCK // (radius + 1)) * -(-width // (radius + 1))
    block_rows = np.empty((nb, cap), dtype=np.int64)
    block_cols = np.empty((nb, cap), dtype=np.int64)
    block_count = np.empty(nb, dtype=np.int64)
    for b in prange(nb):
        block_count[b] = _maxima_rows(
            z,
            z_test,
            threshold,
            radius,
            border,
            block_rows[b],
            block_cols[b],
            b * ROWS_PER_BLOCK,
            min((b + 1) * ROWS_PER_BLOCK, height),
        )
    return _gather_maxima(block_rows, block_cols, block_count, rows, cols)


local_maxima, local_maxima_parallel = serial_and_parallel(local_maxima, cache=True, nogil=True)


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
