"""Numba kernels for the drift-corrected running sum (numpy, numba and math only).

Convention: reference pixel (r, c) shows up at frame pixel (r + shift_y, c + shift_x)
(:func:`ingest_rigid`: at the frame pixel nearest to its rigidly transformed position).
"""

import math

import numpy as np
from numba import njit, prange

from plstream.analysis.kernels.twins import serial_and_parallel

_ROWS_PER_BLOCK = 16


@njit(cache=True, nogil=True)
def accumulate_shifted(total, frame, shift_x, shift_y):
    """Add a photon ``frame`` into the reference-frame sum, undoing an integer drift.

    Reference pixel (r, c) shows up at frame pixel (r + shift_y, c + shift_x);
    reference pixels that fall outside the frame are left alone.
    """
    height, width = total.shape
    c_lo = max(0, shift_x)
    c_hi = min(width, width + shift_x)
    for rf in range(max(0, shift_y), min(height, height + shift_y)):
        acc = total[rf - shift_y, c_lo - shift_x : c_hi - shift_x]
        src = frame[rf, c_lo:c_hi]
        for c in range(c_hi - c_lo):
            acc[c] += src[c]


@njit(cache=True, nogil=True)
def ingest_rows(raw, offset, gain, photons, total, sum_photons, shift_x, shift_y, start, stop):
    """Frame rows ``start:stop``: ADU -> photons, and the frame into the reference accumulator.

    ``photons[rf, cf] = (raw[rf, cf] - offset) * (1 / gain)`` in float64, stored
    as float32. ``total[rf - shift_y, cf - shift_x] += raw[rf, cf]`` where that
    reference pixel is inside the image: ``total`` sums the raw values (an
    integer array for integer data: exact, and a quarter of the memory
    traffic of float64 photons), or, with ``sum_photons``, the photons.
    """
    height, width = total.shape
    c_lo = max(0, shift_x)  # frame columns whose reference column is inside
    c_hi = min(width, width + shift_x)
    inverse_gain = 1.0 / gain
    n = max(c_hi - c_lo, 0)
    for rf in range(start, stop):
        src = raw[rf]
        dst = photons[rf]
        for cf in range(width):
            dst[cf] = (np.float64(src[cf]) - offset) * inverse_gain
        r = rf - shift_y
        if r < 0 or r >= height or n == 0:
            continue
        acc = total[r, c_lo - shift_x : c_hi - shift_x]  # views indexed from 0: the loops vectorize
        if sum_photons:
            add = dst[c_lo:c_hi]
            for c in range(n):
                acc[c] += add[c]
        else:
            add_raw = src[c_lo:c_hi]
            for c in range(n):
                acc[c] += add_raw[c]


def ingest(raw, offset, gain, photons, total, sum_photons, shift_x, shift_y):
    """:func:`ingest_rows` over the whole frame, in blocks of ``_ROWS_PER_BLOCK`` rows.

    ``ingest`` runs the blocks in order on the calling thread, ``ingest_parallel``
    spreads them over numba's threads (same results: each frame row is its own
    reference row).
    """
    height = raw.shape[0]
    for block in prange((height + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK):
        start = block * _ROWS_PER_BLOCK
        stop = min(start + _ROWS_PER_BLOCK, height)
        ingest_rows(raw, offset, gain, photons, total, sum_photons, shift_x, shift_y, start, stop)


ingest, ingest_parallel = serial_and_parallel(ingest, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def flush_raw_sum(partial, counts, offset, gain, total):
    """``total += (partial - counts * offset) / gain`` (raw sums to photons), then ``partial = 0``."""
    height, width = total.shape
    for r in range(height):
        for c in range(width):
            total[r, c] += (np.float64(partial[r, c]) - counts[r, c] * offset) / gain
            partial[r, c] = 0


@njit(cache=True, nogil=True)
def mean_of_sums(total, partial, partial_counts, offset, gain, counts, out):
    """Mean photons per frame: ``(total + (partial - partial_counts * offset) / gain) / counts`` (float32).

    ``partial`` (raw sums not yet in ``total``) may be empty (0 x 0). Pixels
    with counts 0 are left as they are; returns how many there are.
    """
    height, width = total.shape
    with_partial = partial.shape[0] == height
    unseen = 0
    for r in range(height):
        for c in range(width):
            n = counts[r, c]
            if n <= 0:
                unseen += 1
                continue
            value = total[r, c]
            if with_partial:
                value += (np.float64(partial[r, c]) - partial_counts[r, c] * offset) / gain
            out[r, c] = value / n
    return unseen


@njit(cache=True, nogil=True)
def counts_from_shifts(shifts, frames, height, row_start, counts):
    """Frames covering each reference pixel of rows ``row_start..``, from the histogram of integer shifts.

    ``shifts[k] = (shift_x, shift_y)`` was used by ``frames[k]`` frames of
    ``height`` rows; each adds its frame count to the reference pixels it
    covers. ``counts`` (rows, W) int32 is overwritten with rows
    ``row_start .. row_start + rows - 1`` (a difference array per row: O(rows
    (W + shifts))).
    """
    n_rows, width = counts.shape
    diff = np.empty(width + 1, dtype=np.int64)
    for i in range(n_rows):
        r = row_start + i
        diff[:] = 0
        for k in range(shifts.shape[0]):
            sx = shifts[k, 0]
            sy = shifts[k, 1]
            if r + sy < 0 or r + sy >= height:
                continue
            c0 = max(0, -sx)
            c1 = min(width, width - sx)
            if c0 < c1:
                diff[c0] += frames[k]
                diff[c1] -= frames[k]
        running = 0
        for c in range(width):
            running += diff[c]
            counts[i, c] = running


@njit(cache=True, nogil=True)
def _convert_rows(raw, offset, gain, photons, start, stop):
    inverse_gain = 1.0 / gain
    for rf in range(start, stop):
        src = raw[rf]
        dst = photons[rf]
        for cf in range(raw.shape[1]):
            dst[cf] = (np.float64(src[cf]) - offset) * inverse_gain


@njit(cache=True, nogil=True)
def _gather_rows(raw, photons, total, sum_photons, cos_t, sin_t, cx, cy, dx, dy, counts, counts2, start, stop):
    height, width = total.shape
    for r in range(start, stop):
        v = r - cy
        base_x = -sin_t * v + cx + dx
        base_y = cos_t * v + cy + dy
        for c in range(width):
            u = c - cx
            xf = math.floor(cos_t * u + base_x + 0.5)
            yf = math.floor(sin_t * u + base_y + 0.5)
            if xf < 0 or yf < 0 or xf >= width or yf >= height:
                continue
            xi = np.int64(xf)
            yi = np.int64(yf)
            if sum_photons:
                total[r, c] += photons[yi, xi]
            else:
                total[r, c] += raw[yi, xi]
            counts[r, c] += 1
            if counts2.shape[0] == height:
                counts2[r, c] += 1


def ingest_rigid(raw, offset, gain, photons, total, sum_photons, cos_t, sin_t, cx, cy, dx, dy, counts, counts2):
    """ADU -> photons, and the frame into the reference accumulator through a rigid transform.

    Reference pixel (r, c) is seen at frame position ``R (p - c0) + c0 + d``
    (p = (c, r), x = column); it takes the frame pixel nearest to that
    position (no interpolation: each pixel's noise stays its own), when that
    is inside the frame, and ``counts[r, c]`` (and ``counts2[r, c]`` unless
    it is 0 x 0) grows by one. ``total`` sums the raw values, or with
    ``sum_photons`` the photons. Frame rows are converted in blocks of
    ``_ROWS_PER_BLOCK``, then reference rows are gathered in blocks.
    """
    height = raw.shape[0]
    nb = (height + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    for block in prange(nb):
        start = block * _ROWS_PER_BLOCK
        _convert_rows(raw, offset, gain, photons, start, min(start + _ROWS_PER_BLOCK, height))
    for block in prange(nb):
        start = block * _ROWS_PER_BLOCK
        _gather_rows(
            raw,
            photons,
            total,
            sum_photons,
            cos_t,
            sin_t,
            cx,
            cy,
            dx,
            dy,
            counts,
            counts2,
            start,
            min(start + _ROWS_PER_BLOCK, height),
        )


ingest_rigid, ingest_rigid_parallel = serial_and_parallel(ingest_rigid, cache=True, nogil=True)


@njit(cache=True, nogil=True)
def shift_accumulate(total, frame, shift_x, shift_y, sign):
    """Add (``sign`` 1) or take out (-1) a frame at an integer shift, as :func:`ingest_rows` adds it.

    ``total`` may hold raw integer sums (taking out exactly the values that
    went in cannot wrap an unsigned sum) or photons.
    """
    height, width = total.shape
    c_lo = max(0, shift_x)
    c_hi = min(width, width + shift_x)
    for rf in range(max(0, shift_y), min(height, height + shift_y)):
        acc = total[rf - shift_y, c_lo - shift_x : c_hi - shift_x]
        src = frame[rf, c_lo:c_hi]
        if sign < 0:
            for c in range(c_hi - c_lo):
                acc[c] -= src[c]
        else:
            for c in range(c_hi - c_lo):
                acc[c] += src[c]


@njit(cache=True, nogil=True)
def rigid_accumulate(frame, total, sign, cos_t, sin_t, cx, cy, dx, dy, counts, counts2):
    """Add (``sign`` 1) or take out (-1) a frame through a rigid transform, as :func:`ingest_rigid` adds it.

    ``counts`` (and ``counts2`` unless 0 x 0) change by ``sign`` where a
    reference pixel took a frame pixel.
    """
    height, width = total.shape
    for r in range(height):
        v = r - cy
        base_x = -sin_t * v + cx + dx
        base_y = cos_t * v + cy + dy
        for c in range(width):
            u = c - cx
            xf = math.floor(cos_t * u + base_x + 0.5)
            yf = math.floor(sin_t * u + base_y + 0.5)
            if xf < 0 or yf < 0 or xf >= width or yf >= height:
                continue
            value = frame[np.int64(yf), np.int64(xf)]
            if sign > 0:
                total[r, c] += value
            else:
                total[r, c] -= value
            counts[r, c] += sign
            if counts2.shape[0] == height:
                counts2[r, c] += sign
