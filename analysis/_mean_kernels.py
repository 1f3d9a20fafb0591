"""Numba kernel for the drift-corrected running sum (numpy, numba and math only)."""

from numba import njit


@njit(cache=True, nogil=True)
def accumulate_shifted(total, counts, frame, shift_x, shift_y):
    """Add ``frame`` into reference-frame accumulators, undoing an integer drift.

    Reference pixel (r, c) shows up at frame pixel (r + shift_y, c + shift_x);
    reference pixels that fall outside the frame are left alone (their count
    does not grow).
    """
    height, width = total.shape
    for r in range(height):
        rf = r + shift_y
        if rf < 0 or rf >= height:
            continue
        for c in range(width):
            cf = c + shift_x
            if cf < 0 or cf >= width:
                continue
            total[r, c] += frame[rf, cf]
            counts[r, c] += 1
