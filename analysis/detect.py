"""Spot detection on a time-averaged photon image with a noise-model threshold.

Steps (all images in photons/px/frame, x = column, y = row):

1. **Background map.** The image is cut into ~16 x 16 px tiles (6 sigma for spots wider than 2.7 px). A rough map
   interpolates the tile medians (of every third row and column); then each
   tile's residual from it is a sigma-clipped mean (pixels more than 3 noise
   SDs from the centre dropped, twice), so spots do not raise it, gradients
   inside a tile are not clipped, and integer-valued single frames do not
   bias it. Tile levels are interpolated with Catmull-Rom cubics (linear
   extrapolation past the outer tile centres), which reproduces gradients and
   gentle curvature of the illumination.
2. **Matched filter.** ``F = (mean - bg) ⋆ k'`` where ``k`` is the
   pixel-integrated Gaussian (sigma = PSF, taps to ceil(3 sigma)) inside a
   (2B+1)^2 box, ``B = max(ceil(5 sigma), ceil(3 sigma) + 1)``, and
   ``k' = k - mean(k)`` its zero-mean version (mean over the part of the box
   inside the image). The zero mean makes F blind to any residual constant or
   linear background; it costs ~5 % of the ideal matched-filter SNR at
   sigma 1.3 px. Computed as a separable Gaussian correlation plus a
   running-sum box, both zero-padded.
3. **Significance.** Under H0 (no spot) a pixel of the mean image has
   variance ``(bg + read_variance) / n`` (n = frames that pixel saw; the
   per-frame variance is floored at 1/n). ``z = F / sqrt(sum_j k'_j^2 var_j)``,
   exact for a per-pixel ``n`` map. Where every pixel of the box saw the same
   n (all of a drift-shifted mean but a few box widths along the edges) the
   sum has a closed form; only the rest needs the per-pixel sum. A pixel is a candidate when z is the
   maximum of its (2 min_sep + 1)^2 window and exceeds
   ``threshold + gamma/6 (threshold^2 - 1)``, where gamma is the Poisson
   skewness of F (Cornish-Fisher): the false-alarm rate is then that of a
   Gaussian ``threshold_sigma`` tail even at low counts.
4. **Shape and clutter.** A spot is a blob: at a candidate both principal
   curvatures of z (smoothed once more at the PSF width, so that a beaded
   scratch is a line) must be negative and the smaller at least a fifth of
   the larger (scratches, edges and lines curve in one direction only). And it
   must stand out from its neighbourhood, not only from the noise model:
   where the robust spread of z around a candidate exceeds 1.2 (texture, a
   noise model that is too optimistic), z is divided by it before the
   threshold. The spread is that of the Gaussian-filtered ``mean - bg``
   around the candidate (window ``2 * _CLUTTER_HALF_PX + 1`` px) over the
   noise model's: the median absolute deviation of its lower half (pixels
   below the median) about its own median, scaled to 1 for Gaussian noise.
   Spots only raise the filtered image, so however crowded they are that
   half holds noise and texture alone.
5. **Refinement.** Sub-pixel position by an iterated Gaussian-weighted
   centroid of ``mean - bg`` (unbiased for a Gaussian spot; ~0.045 px rms per axis
   at 2000 photons), photons by a least-squares fit of PSF amplitude plus a
   local constant at that position (immune to background-map errors).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import erf

from plstream.analysis.kernels import background as _bk
from plstream.analysis.kernels import detect as _k

__all__ = ["Detections", "detect_spots"]

logger = logging.getLogger(__name__)

FloatArray = np.ndarray  # (K,) or (K, 2) float64
_TILE_PX = 16
_CLIP_SIGMA = 3.0
_EDGE_FIT_TILES = 3
_CLIP_ROUNDS = 1  # the rough map is close: one round of clipping suffices
_UNSEEN_WEIGHT = 1e6  # 1/n for pixels no frame covered: their noise swamps any spot
_REFINE_ITERATIONS = 10
_BLOB_RATIO = 0.2  # smaller / larger principal curvature of z at a spot
_CLUTTER_HALF_PX = 24  # half-width of the window whose spread of z is the local clutter (at least 6 sigma)
_CLUTTER_MIN = 1.2  # a spread of z below this is the noise model's own: no correction
_LOWER_HALF_MAD = 0.39879  # the MAD of the lower half of Gaussian noise about its own median


@dataclass(frozen=True)
class Detections:
    """Spots found in a mean image, most significant first.

    Attributes
    ----------
    xy : (K, 2) float64
        Sub-pixel positions (x = column, y = row), px.
    significance : (K,) float64
        Matched-filter signal-to-noise z of each spot under the noise model.
    photons : (K,) float64
        Estimated photons per frame of each spot (least-squares PSF amplitude
        with a local constant background; total photons of the PSF).
    """

    xy: FloatArray
    significance: FloatArray
    photons: FloatArray

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No spots."""
        return cls(np.zeros((0, 2)), np.zeros(0), np.zeros(0))


def _gaussian_taps(sigma: float, half: int) -> np.ndarray:
    """Pixel-integrated 1-D Gaussian at offset 0, taps -half..half (sums to ~1)."""
    u = np.arange(-half, half + 1, dtype=np.float64)
    s = math.sqrt(2.0) * sigma
    return 0.5 * (erf((u + 0.5) / s) - erf((u - 0.5) / s))


def _valid_sums(size: int, taps: np.ndarray, box_half: int) -> np.ndarray:
    """Per index: mean Gaussian tap over the in-image box, sum of squared taps, box length."""
    half = taps.size // 2
    offsets = np.arange(-box_half, box_half + 1)
    padded = np.zeros(offsets.size)
    padded[box_half - half : box_half + half + 1] = taps
    idx = np.arange(size)[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < size)
    length = inside.sum(1).astype(np.float64)
    return np.stack([(inside * padded).sum(1) / length, (inside * padded**2).sum(1), length])


def _kernel(name: str, parallel: bool):
    """Kernel ``name`` of ``kernels.detect`` or ``kernels.background``, or its multi-threaded twin (same results)."""
    name = f"{name}_parallel" if parallel else name
    return getattr(_k, name) if hasattr(_k, name) else getattr(_bk, name)


def _background_map(
    image: np.ndarray, n_map: np.ndarray, read_variance: float, parallel: bool = False, sigma: float = 0.0
) -> np.ndarray:
    """Smooth background, photons/px/frame (module notes, step 1); tiles of 16 px, or 6 sigma for wide spots."""
    height, width = image.shape
    tile = max(_TILE_PX, round(6.0 * sigma))
    ny, nx = max(1, round(height / tile)), max(1, round(width / tile))
    row_edges = (np.arange(ny + 1) * height) // ny
    col_edges = (np.arange(nx + 1) * width) // nx
    tiles = np.empty((ny, nx))
    _kernel("tile_medians", parallel)(image, n_map, row_edges, col_edges, 3, tiles)
    bad = ~np.isfinite(tiles)
    if bad.all():
        return np.zeros_like(image)
    tiles[bad] = np.median(tiles[~bad])
    rough = _interpolate_tiles(tiles, height, width, parallel)
    _kernel("tile_clipped_means", parallel)(
        image, rough, n_map, float(read_variance), row_edges, col_edges, _CLIP_SIGMA, _CLIP_ROUNDS, tiles
    )
    return rough + _interpolate_tiles(tiles, height, width, parallel)


def _interpolate_tiles(tiles: np.ndarray, height: int, width: int, parallel: bool = False) -> np.ndarray:
    """Catmull-Rom interpolation of tile levels (at tile centres) onto the image grid."""
    ny, nx = tiles.shape
    grid = _padding_matrix(ny) @ tiles @ _padding_matrix(nx).T  # two cells of extrapolation on each side
    ri, rw = _cubic_taps(height, ny)
    ci, cw = _cubic_taps(width, nx)
    out = np.empty((height, width), dtype=np.float32)
    _kernel("cubic_upsample", parallel)(grid, ri, rw, ci, cw, np.empty((grid.shape[0], width)), out)
    return out


@functools.lru_cache(maxsize=8)
def _padding_matrix(n: int) -> np.ndarray:
    """(n + 4, n): n tile levels -> the same with two extrapolated cells on each side.

    Each new cell is a least-squares polynomial (quadratic for n >= 3) through
    the ``_EDGE_FIT_TILES`` edge-most tiles, evaluated one and two cells out:
    it follows curved illumination while averaging down the scatter of single
    tile levels.
    """
    m = min(n, _EDGE_FIT_TILES)
    weights = _extrapolation_weights(m)  # (2, m): cells -1, -2 from cells 0..m-1
    pad = np.zeros((n + 4, n))
    pad[2:-2] = np.eye(n)
    pad[1, :m] = weights[0]  # cell -1
    pad[0, :m] = weights[1]  # cell -2
    pad[-2, n - 1 :: -1][:m] = weights[0]  # cell n
    pad[-1, n - 1 :: -1][:m] = weights[1]  # cell n + 1
    return _frozen(pad)


def _frozen(array: np.ndarray) -> np.ndarray:
    """Mark a cached array read-only, so no caller can change what later calls get."""
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=8)
def _extrapolation_weights(m: int) -> np.ndarray:
    """Weights giving the values 1 and 2 cells beyond the edge from the m edge-most tiles.

    A least-squares polynomial (quadratic for m >= 3, else of degree m - 1)
    through cells 0..m-1 evaluated at -1 and -2: follows curved illumination
    while averaging down the scatter of single tile levels.
    """
    t = np.arange(m, dtype=np.float64)
    degree = min(2, m - 1)
    design = np.vander(t, degree + 1, increasing=True)
    target = np.vander(np.array([-1.0, -2.0]), degree + 1, increasing=True)
    return _frozen(target @ np.linalg.pinv(design))


@functools.lru_cache(maxsize=8)
def _cubic_taps(size: int, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """First padded-grid index and Catmull-Rom weights for each image row (or column)."""
    u = (np.arange(size) + 0.5) * n_tiles / size - 0.5  # position in tile units
    i = np.floor(u)
    f = u - i
    f2, f3 = f * f, f * f * f
    w = 0.5 * np.stack([-f3 + 2 * f2 - f, 3 * f3 - 5 * f2 + 2, -3 * f3 + 4 * f2 + f, f3 - f2], axis=1)
    return _frozen((i + 1).astype(np.int64)), _frozen(w)  # tap a uses padded index i - 1 + a + 2


def _filter_geometry(sigma: float) -> tuple[np.ndarray, int]:
    """Gaussian taps (half-width ceil(3 sigma)) and the half-width of the zero-mean box."""
    half = max(1, math.ceil(3.0 * sigma))
    return _gaussian_taps(sigma, half), max(half + 1, math.ceil(5.0 * sigma))


@dataclass(frozen=True)
class _FilterPlan:
    """What the matched filter needs for one PSF width and image shape (computed once, then cached).

    ``taps`` (float64) and ``taps32`` the Gaussian taps, ``box_half`` the
    zero-mean box half-width, ``sums`` the per-row and per-column in-image
    tap statistics of :func:`_k.significance`, ``sum_k3`` the third moment of
    the zero-mean kernel (for the skewness correction).
    """

    taps: np.ndarray
    taps32: np.ndarray
    box_half: int
    sums: np.ndarray
    sum_k3: float


@functools.lru_cache(maxsize=8)
def _filter_plan(sigma: float, height: int, width: int) -> _FilterPlan:
    g, box_half = _filter_geometry(sigma)
    sums = np.zeros((6, max(height, width)))
    sums[:3, :height] = _valid_sums(height, g, box_half)
    sums[3:, :width] = _valid_sums(width, g, box_half)
    padded = np.zeros(2 * box_half + 1)
    padded[box_half - g.size // 2 : box_half + g.size // 2 + 1] = g
    k2d = np.multiply.outer(padded, padded)
    sum_k3 = float(((k2d - k2d.mean()) ** 3).sum())
    return _FilterPlan(_frozen(g), _frozen(g.astype(np.float32)), box_half, _frozen(sums), sum_k3)


def _energy_map(
    n_map: np.ndarray, n_core: float, g: np.ndarray, box_half: int, sums: np.ndarray, parallel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``q = sum_j k'_j^2 / n_j`` where the kernel box saw more than one n; the rectangle where it did not.

    Returns ``(core, q_map)``: inside ``core = [r0, r1, c0, c1]`` every pixel
    of the box saw ``n_core`` frames and :func:`_k.significance` uses the
    closed form; ``q_map`` holds q elsewhere. For a map of shifted frames the
    rest is four bands along the edges, a few box widths wide, each computed
    from a crop with a ``box_half`` margin; any other map is computed whole.
    """
    height, width = n_map.shape
    q_map = np.empty((height, width))
    energy = _kernel("kernel_energy", parallel)
    r0, r1, c0, c1 = _k.uniform_core(n_map, n_core)
    # pixels whose in-image box lies inside the uniform rectangle
    i0 = r0 + box_half if r0 > 0 else 0
    i1 = r1 - box_half if r1 < height else height
    j0 = c0 + box_half if c0 > 0 else 0
    j1 = c1 - box_half if c1 < width else width
    if i1 - i0 < 2 * box_half or j1 - j0 < 2 * box_half:
        energy(n_map, g, box_half, _UNSEEN_WEIGHT, sums, 0, 0, q_map)
        return np.zeros(4, dtype=np.int64), q_map
    bands = ((0, i0, 0, width), (i1, height, 0, width), (i0, i1, 0, j0), (i0, i1, j1, width))
    for ra, rb, ca, cb in bands:
        if ra >= rb or ca >= cb:
            continue
        cr0, cr1 = max(0, ra - box_half), min(height, rb + box_half)
        cc0, cc1 = max(0, ca - box_half), min(width, cb + box_half)
        q_crop = np.empty((cr1 - cr0, cc1 - cc0))
        energy(np.ascontiguousarray(n_map[cr0:cr1, cc0:cc1]), g, box_half, _UNSEEN_WEIGHT, sums, cr0, cc0, q_crop)
        q_map[ra:rb, ca:cb] = q_crop[ra - cr0 : rb - cr0, ca - cc0 : cb - cc0]
    return np.array([i0, i1, j0, j1], dtype=np.int64), q_map


def _significance(
    data: np.ndarray,
    background: np.ndarray,
    n_map: np.ndarray,
    uniform_n: float | None,
    sigma: float,
    read_variance: float,
    threshold: float,
    parallel: bool = False,
    n_max: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z map of background-subtracted ``data``, its skewness-corrected twin, and ``data`` ⋆ Gaussian (module notes).

    ``n_max``: the largest entry of ``n_map`` when the caller knows it.
    """
    height, width = data.shape
    plan = _filter_plan(float(sigma), height, width)
    g, box_half, sums = plan.taps, plan.box_half, plan.sums
    work = [np.empty((height, width), dtype=np.float32) for _ in range(4)]
    f_gauss, f_box, row_gauss, row_box = work
    _kernel("correlate_gauss_box", parallel)(data, plan.taps32, box_half, f_gauss, f_box, row_gauss, row_box)
    if uniform_n is not None:
        core, q_map = np.array([0, height, 0, width], dtype=np.int64), np.zeros((0, 0))
    else:
        # float64: pixels never observed carry a huge weight, and q is a difference of sums
        n_core = float(np.max(n_map)) if n_max is None else float(n_max)
        core, q_map = _energy_map(n_map, n_core, g, box_half, sums, parallel)
    z, z_test = row_gauss, row_box  # reuse the work arrays
    _kernel("significance", parallel)(
        f_gauss,
        f_box,
        sums,
        q_map,
        core,
        background,
        n_map,
        float(read_variance),
        plan.sum_k3,
        float(threshold),
        z,
        z_test,
    )
    return z, z_test, f_gauss


_N_MAP_TYPES = (np.float32, np.float64, np.int32, np.int64)


def _check_inputs(
    mean_image: np.ndarray, n_frames: int | np.ndarray, parallel: bool
) -> tuple[np.ndarray, np.ndarray, float | None, int, float]:
    """Image (float32), n map (float or int), the uniform n if any, the pixels with n > 0, the largest n."""
    image = np.asarray(mean_image)
    if image.ndim != 2:
        raise ValueError(f"mean_image must be a 2-D photon image, got shape {image.shape}")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if np.ndim(n_frames) == 0:
        n = float(n_frames)
        if not n >= 1:
            raise ValueError(f"n_frames must be >= 1 (frames averaged into mean_image), got {n_frames}")
        n_map = np.full(image.shape, n, dtype=np.float32)
    else:
        n_map = np.asarray(n_frames)
        if n_map.dtype not in _N_MAP_TYPES:
            n_map = n_map.astype(np.float32)
        if n_map.shape != image.shape:
            raise ValueError(f"n_frames map has shape {n_map.shape}, mean_image has {image.shape}; they must match")
        n_map = np.ascontiguousarray(n_map)
    if image.size == 0:
        return image, n_map, None, 0, 0.0
    bad_image, bad_n, positive, n_min, n_max = _kernel("map_stats", parallel)(image, n_map)
    if bad_n:
        raise ValueError("n_frames map must hold finite frame counts >= 0")
    uniform_n = float(n_min) if positive == n_map.size and n_min == n_max else None
    if bad_image:
        finite = np.isfinite(image)
        image = np.where(finite, image, 0.0).astype(np.float32)
        n_map = np.where(finite, n_map, 0.0).astype(np.float32)
        uniform_n = None
    return image, n_map, uniform_n, int(positive), float(n_max)


def _blob_like(z: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float) -> np.ndarray:
    """Candidates where z curves down in every direction, not along a line (module notes, step 4).

    The curvatures are those of z smoothed once more at the PSF width (a
    beaded scratch is a line at that scale; a particle is still round).
    """
    height, width = z.shape
    keep = np.ones(rows.size, dtype=np.bool_)
    half = max(2, math.ceil(3.0 * sigma))
    for k in range(rows.size):
        r, c = int(rows[k]), int(cols[k])
        if r < 1 or c < 1 or r >= height - 1 or c >= width - 1:
            continue  # on the image border: no curvature test
        r0, r1 = max(0, r - half - 1), min(height, r + half + 2)
        c0, c1 = max(0, c - half - 1), min(width, c + half + 2)
        crop = ndimage.gaussian_filter(np.asarray(z[r0:r1, c0:c1], dtype=np.float64), sigma, mode="nearest")
        i, j = r - r0, c - c0
        centre = crop[i, j]
        dxx = crop[i, j + 1] + crop[i, j - 1] - 2.0 * centre
        dyy = crop[i + 1, j] + crop[i - 1, j] - 2.0 * centre
        dxy = 0.25 * (crop[i + 1, j + 1] + crop[i - 1, j - 1] - crop[i + 1, j - 1] - crop[i - 1, j + 1])
        root = math.sqrt((dxx - dyy) ** 2 + 4.0 * dxy * dxy)
        high = 0.5 * (dxx + dyy + root)  # the curvature closer to 0 (both negative on a blob)
        low = 0.5 * (dxx + dyy - root)
        keep[k] = high < 0.0 and high <= _BLOB_RATIO * low
    return keep


def _stands_out(
    smooth: np.ndarray,
    noise: tuple[np.ndarray, np.ndarray, float],
    z_test: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    threshold: float,
    sigma: float,
) -> np.ndarray:
    """Candidates still significant after z is scaled by the local clutter (module notes, step 4)."""
    keep = np.ones(rows.size, dtype=np.bool_)
    if rows.size == 0:
        return keep
    background, n_map, read_variance = noise
    taps = _filter_geometry(sigma)[0]
    energy = float(np.sum(taps**2)) ** 2  # sum of the squared 2-D Gaussian weights
    height, width = smooth.shape
    half = max(_CLUTTER_HALF_PX, math.ceil(6.0 * sigma))
    stride = 3  # every third row and column: a ninth of the pixels give the same spread
    for k in range(rows.size):
        r0, r1 = max(0, rows[k] - half), min(height, rows[k] + half + 1)
        c0, c1 = max(0, cols[k] - half), min(width, cols[k] + half + 1)
        window = smooth[r0:r1:stride, c0:c1:stride].ravel()
        low = window[window < np.median(window)]  # spots only raise it: its lower half is noise and texture
        if low.size < 16:
            continue
        n = float(np.median(n_map[r0:r1:stride, c0:c1:stride]))
        if not n > 0:
            continue
        level = float(np.median(background[r0:r1:stride, c0:c1:stride])) + read_variance
        expected = math.sqrt(max(level, 1.0 / n) * energy / n)
        spread = float(np.median(np.abs(low - np.median(low)))) / _LOWER_HALF_MAD / expected
        if spread > _CLUTTER_MIN:
            keep[k] = z_test[rows[k], cols[k]] / spread >= threshold
    return keep


def detect_spots(
    mean_image: np.ndarray,
    n_frames: int | np.ndarray,
    *,
    psf_sigma_px: float,
    read_variance: float = 0.0,
    threshold_sigma: float = 5.0,
    min_separation_px: int | None = None,
    border_px: int = 1,
    exclude_xy: np.ndarray | None = None,
    exclude_radius_px: float | None = None,
    parallel: bool = False,
) -> Detections:
    """Find spots significantly above the shot + read noise of a mean image.

    Parameters
    ----------
    mean_image : (H, W) array
        Time-averaged photon image, photons/px/frame.
    n_frames : int or (H, W) array
        Frames averaged into each pixel (a map for drift-shifted accumulation;
        0 = never observed, such pixels cannot host a detection).
    psf_sigma_px : float
        Gaussian PSF standard deviation, px.
    read_variance : float
        Read-noise variance, photons² per pixel per frame.
    threshold_sigma : float
        Significance threshold in noise standard deviations (Gaussian-tail
        equivalent); 5 gives < 0.05 false detections per 256² image.
    min_separation_px : int, optional
        Local-maximum window half-width, px; default ``max(2, ceil(2 sigma))``.
    border_px : int
        Candidates closer than this to the edge are dropped, px.
    exclude_xy : (M, 2) array, optional
        Already known spots (x, y); candidates within ``exclude_radius_px``
        (default 2 sigma) of one are dropped.
    parallel : bool
        Spread the image work over numba's threads. The image is cut into the
        same blocks of rows either way, so the result is identical.

    Returns
    -------
    Detections
        Sorted by significance, descending.
    """
    sigma = float(psf_sigma_px)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"psf_sigma_px must be a positive number of pixels, got {psf_sigma_px}")
    if read_variance < 0:
        raise ValueError(f"read_variance must be >= 0 photons², got {read_variance}")
    image, n_map, uniform_n, n_positive, n_max = _check_inputs(mean_image, n_frames, parallel)
    height, width = image.shape
    sep = max(2, math.ceil(2.0 * sigma)) if min_separation_px is None else int(min_separation_px)
    if sep < 1:
        raise ValueError(f"min_separation_px must be >= 1, got {min_separation_px}")
    if image.size == 0 or n_positive == 0:
        return Detections.empty()
    background = _background_map(image, n_map, read_variance, parallel, sigma)
    data = image - background
    z, z_test, smooth = _significance(
        data, background, n_map, uniform_n, sigma, read_variance, threshold_sigma, parallel, n_max
    )
    capacity = -(-height // (sep + 1)) * -(-width // (sep + 1))
    rows = np.empty(capacity, dtype=np.int64)
    cols = np.empty(capacity, dtype=np.int64)
    maxima = _kernel("local_maxima", parallel)
    count = maxima(z, z_test, float(threshold_sigma), sep, int(max(border_px, 0)), rows, cols)
    rows, cols = rows[:count], cols[:count]
    half = max(1, math.ceil(3.0 * sigma))
    xy = np.empty((count, 2))
    _k.refine_centroids(data, rows, cols, sigma, half, _REFINE_ITERATIONS, xy)
    keep = np.ones(count, dtype=np.bool_)
    if exclude_xy is not None and count:
        known = np.asarray(exclude_xy, dtype=np.float64).reshape(-1, 2)
        known = known[np.isfinite(known).all(axis=1)]
        if known.shape[0]:
            radius = 2.0 * sigma if exclude_radius_px is None else float(exclude_radius_px)
            distance, _ = cKDTree(known).query(xy, k=1)
            keep = distance > radius
    # shape and clutter (step 4) only for the candidates that are not known spots already
    keep[keep] = _blob_like(z, rows[keep], cols[keep], sigma)
    noise = (background, n_map, float(read_variance))
    keep[keep] = _stands_out(smooth, noise, z_test, rows[keep], cols[keep], float(threshold_sigma), sigma)
    xy = xy[keep]
    significance = z[rows[keep], cols[keep]].astype(np.float64)
    photons = np.empty(xy.shape[0])
    _k.psf_photons(data, xy, sigma, half + 1, np.empty(2 * half + 3), photons)
    order = np.argsort(-significance, kind="stable")
    logger.debug("detected %d spots (threshold %.1f sigma)", order.size, threshold_sigma)
    return Detections(xy[order], significance[order], photons[order])
