"""Small kernels shared by detection and photometry (numpy, numba and math only)."""

import math

from numba import njit


@njit(cache=True, nogil=True)
def select_kth(values, n, k):
    """The k-th smallest of ``values[:n]`` (0-based), reordering them in place (quickselect)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return values[k]


@njit(cache=True, nogil=True)
def delta_erf(u, mu, sigma):
    """Fraction of a 1-D Gaussian (mu, sigma) inside the pixel centred at integer u."""
    s = 1.0 / (math.sqrt(2.0) * sigma)
    return 0.5 * (math.erf((u - mu + 0.5) * s) - math.erf((u - mu - 0.5) * s))


ROWS_PER_BLOCK = 32  # image rows per work block of the kernels with a parallel twin (detection, background)


@njit(cache=True, nogil=True)
def row_blocks(n_rows):
    """How many blocks of ``ROWS_PER_BLOCK`` rows cover ``n_rows`` rows (the last may be shorter)."""
    return (n_rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
