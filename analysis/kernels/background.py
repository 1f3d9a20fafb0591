"""Numba kernels for the background map of spot detection (numpy, numba and math only).

The image is cut into tiles (row and column edges given); each tile gets a
robust level, and the levels are interpolated back onto the image grid.
Kernels write into arrays the caller allocated. The three public kernels
are written once and compiled twice (:mod:`.twins`): serial, and a
``_parallel`` twin that spreads the iterations of their ``prange`` loop
(bands of tiles, or blocks of rows) over numba's threads, with identical
results. Images are (H, W), x = column, y = row.
"""

import numpy as np
from numba import njit, prange

from plstream.analysis.kernels.shared import ROWS_PER_BLOCK, row_blocks, select_kth
from plstream.analysis.kernels.twins import serial_and_parallel


@njit(cache=True, nogil=True)
def _tile_medians_band(image, n_map, row_edges, col_edges, stride, out, ty):
    """Tile medians of band ``ty`` (see :func:`tile_medians`)."""
    n_tx = col_edges.size - 1
    widest = 0
    for tx in range(n_tx):
        widest = max(widest, col_edges[tx + 1] - col_edges[tx])
    buf = np.empty((n_tx, (row_edges[ty + 1] - row_edges[ty]) * widest))
    counts = np.zeros(n_tx, dtype=np.int64)
    for r in range(row_edges[ty], row_edges[ty + 1], stride):  # row-major gathers of one band of tiles
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


def tile_medians(image, n_map, row_edges, col_edges, stride, out):
    """Median of each tile, from every ``stride``-th row and column (a quick robust level).

    Tile (ty, tx) spans rows ``row_edges[ty]:row_edges[ty+1]`` and the matching
    columns; pixels with ``n_map <= 0`` (never observed) are ignored (a tile
    whose sampled pixels are all unobserved is sampled fully). For an even
    count the upper median is taken. NaN for a tile without observed pixels.
    """
    for ty in prange(row_edges.size - 1):
        _tile_medians_band(image, n_map, row_edges, col_edges, stride, out, ty)


tile_medians, tile_medians_parallel = serial_and_parallel(tile_medians, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def _clipped_band(image, reference, n_map, read_variance, row_edges, col_tile, clip, rounds, out, ty):
    """Clipped tile means of band ``ty`` (see :func:`tile_clipped_means`)."""
    clip2 = clip * clip
    n_tx = out.shape[1]
    width = image.shape[1]
    centre = np.zeros(n_tx)
    total = np.empty(n_tx)
    kept = np.empty(n_tx)
    for _ in range(rounds):
        total[:] = 0.0
        kept[:] = 0.0
        for r in range(row_edges[ty], row_edges[ty + 1]):
            for c in range(width):
                tx = col_tile[c]
                n = np.float64(n_map[r, c])
                d = image[r, c] - reference[r, c] - centre[tx]
                # n > 0 and |d| <= clip * sqrt(max(level, 1/n) / n), without divisions
                if n > 0 and d * d * n * n <= clip2 * max((reference[r, c] + read_variance) * n, 1.0):
                    total[tx] += d
                    kept[tx] += 1.0
        for tx in range(n_tx):
            if kept[tx] > 0:
                centre[tx] += total[tx] / kept[tx]
    for tx in range(n_tx):
        out[ty, tx] = centre[tx]


@njit(cache=True, nogil=True)
def _column_tiles(col_edges, width):
    col_tile = np.empty(width, dtype=np.int64)
    for tx in range(col_edges.size - 1):
        col_tile[col_edges[tx] : col_edges[tx + 1]] = tx
    return col_tile


def tile_clipped_means(image, reference, n_map, read_variance, row_edges, col_edges, clip, rounds, out):
    """Sigma-clipped mean of ``image - reference`` in each tile (spots clipped away).

    Starting from 0, pixels farther than ``clip`` noise SDs from the centre
    are dropped and the centre becomes the mean of the rest (``rounds``
    times). The noise SD of a pixel is ``sqrt(max(reference + read_variance,
    1/n) / n)`` photons. Pixels with ``n_map <= 0`` are ignored; a tile keeping
    none gets 0.
    """
    col_tile = _column_tiles(col_edges, image.shape[1])
    for ty in prange(row_edges.size - 1):  # row-major sweeps of one band of tiles (cache friendly)
        _clipped_band(image, reference, n_map, read_variance, row_edges, col_tile, clip, rounds, out, ty)


tile_clipped_means, tile_clipped_means_parallel = serial_and_parallel(tile_clipped_means, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def _upsample_columns(grid, col_index, col_weight, tmp):
    for j in range(grid.shape[0]):  # along the columns first: a few grid rows only
        for c in range(tmp.shape[1]):
            j0 = col_index[c]
            acc = 0.0
            for b in range(4):
                acc += col_weight[c, b] * grid[j, j0 + b]
            tmp[j, c] = acc


@njit(cache=True, nogil=True)
def _upsample_rows(tmp, row_index, row_weight, out, start, stop):
    width = out.shape[1]
    for r in range(start, stop):  # whole rows: contiguous, vectorizable
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


def cubic_upsample(grid, row_index, row_weight, col_index, col_weight, tmp, out):
    """Separable 4-tap interpolation of a small grid onto the image.

    ``out[r, c] = sum_a sum_b row_weight[r, a] col_weight[c, b]
    grid[row_index[r] + a, col_index[c] + b]``; ``tmp`` is (grid rows, W). The rows are
    interpolated in blocks of ``ROWS_PER_BLOCK``.
    """
    _upsample_columns(grid, col_index, col_weight, tmp)
    height = out.shape[0]
    for b in prange(row_blocks(height)):
        _upsample_rows(tmp, row_index, row_weight, out, b * ROWS_PER_BLOCK, min((b + 1) * ROWS_PER_BLOCK, height))


cubic_upsample, cubic_upsample_parallel = serial_and_parallel(cubic_upsample, cache=True, nogil=True)
