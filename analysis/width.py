"""The width of particles, from a few px to well over 10 px, by scale-space blob analysis.

A Gaussian blob of width s responds most strongly to the scale-normalised
Laplacian-of-Gaussian filter ``-t² ∇²G_t`` at ``t = s`` (Lindeberg 1998).
:func:`blob_widths` evaluates that response at the centre of each candidate
over geometrically spaced scales (on a crop around it, so the cost does not
grow with the frame) and interpolates the peak. The result seeds the
maximum-likelihood fits that refine it; unlike a fit in a fixed small
region, it has no upper bound short of ``max_sigma_px``, and it says when the
width sits at a bound of the scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["MAX_WIDTH_PX", "MIN_WIDTH_PX", "BlobWidths", "blob_widths"]

MIN_WIDTH_PX = 0.8
MAX_WIDTH_PX = 16.0
_SCALES_PER_OCTAVE = 6


@dataclass(frozen=True)
class BlobWidths:
    """Widths of candidate blobs.

    Attributes
    ----------
    sigma : (K,) float64
        Gaussian width of each candidate, px (NaN where no peak was found).
    at_bound : (K,) bool
        The response peaked at the smallest or largest scale scanned (the width is only a bound).
    """

    sigma: np.ndarray
    at_bound: np.ndarray


def _scales(min_px: float, max_px: float) -> np.ndarray:
    n = max(2, math.ceil(_SCALES_PER_OCTAVE * math.log2(max_px / min_px)) + 1)
    return min_px * (max_px / min_px) ** (np.arange(n) / (n - 1))


def blob_widths(
    image: np.ndarray, centers_xy: np.ndarray, *, min_sigma_px: float = MIN_WIDTH_PX, max_sigma_px: float = MAX_WIDTH_PX
) -> BlobWidths:
    """Gaussian width of the (bright) blob at each centre, by the scale-normalised LoG peak.

    Parameters
    ----------
    image : (H, W) array
        Background need not be removed (the Laplacian ignores a linear one).
    centers_xy : (K, 2) array
        Blob centres (x, y), px.
    min_sigma_px, max_sigma_px : float
        The scales scanned, px.

    Returns
    -------
    BlobWidths
        The pixel-integrated width: a blob drawn with Gaussian sigma s gives
        about ``sqrt(s² + 1/12)``.
    """
    img = np.asarray(image, dtype=np.float64)
    centers = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
    scales = _scales(min_sigma_px, max_sigma_px)
    sigma = np.full(centers.shape[0], np.nan)
    at_bound = np.zeros(centers.shape[0], dtype=np.bool_)
    height, width = img.shape
    for k, (x, y) in enumerate(centers):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = int(round(x)), int(round(y))
        if not (0 <= cx < width and 0 <= cy < height):
            continue
        responses = np.full(scales.size, -np.inf)
        for i, t in enumerate(scales):
            half = math.ceil(4.0 * t) + 2
            r0, r1 = max(0, cy - half), min(height, cy + half + 1)
            c0, c1 = max(0, cx - half), min(width, cx + half + 1)
            crop = img[r0:r1, c0:c1]
            if min(crop.shape) < 3:
                continue
            log = ndimage.gaussian_laplace(crop, t, mode="nearest")
            # the strongest response within half a scale of the centre (the centre is only approximate)
            rr, cc = cy - r0, cx - c0
            reach = max(1, int(round(0.5 * t)))
            window = log[max(0, rr - reach) : rr + reach + 1, max(0, cc - reach) : cc + reach + 1]
            responses[i] = -(t**2) * float(window.min())
        best = int(np.argmax(responses))
        if not np.isfinite(responses[best]) or responses[best] <= 0:
            continue
        at_bound[k] = best in (0, scales.size - 1)
        if 0 < best < scales.size - 1:  # parabola through the peak in log scale
            y0, y1, y2 = responses[best - 1 : best + 2]
            denominator = y0 - 2.0 * y1 + y2
            step = 0.5 * (y0 - y2) / denominator if denominator < 0 else 0.0
            log_step = math.log(scales[1] / scales[0])
            sigma[k] = scales[best] * math.exp(float(np.clip(step, -1.0, 1.0)) * log_step)
        else:
            sigma[k] = scales[best]
    return BlobWidths(sigma, at_bound)
