"""Spot detection: filter vs a scipy twin, false-positive rate, recall, accuracy, options."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import erf

from plstream.analysis.detect import Detections, _background_map, _energy_map, _filter_plan, _significance, detect_spots
from plstream.analysis.kernels import detect as _detect_kernels
from plstream.analysis.kernels.shared import select_kth

SIGMA = 1.3


def _render(shape, xy, photons, background):
    """Expected photons per pixel: pixel-integrated Gaussian spots on a background."""
    image = np.broadcast_to(np.asarray(background, dtype=np.float64), shape).copy()
    rows, cols = np.arange(shape[0] + 1) - 0.5, np.arange(shape[1] + 1) - 0.5
    s = math.sqrt(2.0) * SIGMA
    for (x, y), n in zip(np.atleast_2d(xy), np.broadcast_to(photons, len(np.atleast_2d(xy)))):
        image += n * np.outer(np.diff(0.5 * erf((rows - y) / s)), np.diff(0.5 * erf((cols - x) / s)))
    return image


def _mean_image(rng, expected, n_frames):
    """Mean of n_frames Poisson frames (n_frames scalar or per-pixel map; 0 -> median fill)."""
    n = np.broadcast_to(n_frames, expected.shape)
    image = rng.poisson(expected * n) / np.maximum(n, 1)
    if np.any(n == 0):
        image[n == 0] = np.median(image[n > 0])
    return image.astype(np.float32)


def _spread_positions(rng, size, step=10, margin=8):
    """Jittered grid: spots at least step - 2 px apart, margin px from the edge."""
    g = np.arange(margin, size - margin + 1, step, dtype=float)
    xx, yy = np.meshgrid(g, g)
    return np.column_stack([xx.ravel(), yy.ravel()]) + rng.uniform(-1, 1, (xx.size, 2))


def _match(found_xy, true_xy, tolerance=1.0):
    if len(found_xy) == 0:
        return np.zeros(len(true_xy), bool), np.full(len(true_xy), np.inf)
    distance, _ = cKDTree(found_xy).query(true_xy)
    return distance <= tolerance, distance


# ----------------------------------------------------------------------------- numpy twins
def _twin_z(data, background, n_map, read_variance):
    """z map straight from the definition, with scipy.ndimage.correlate (zero padding)."""
    half = math.ceil(3 * SIGMA)
    box_half = max(half + 1, math.ceil(5 * SIGMA))
    u = np.arange(-half, half + 1)
    g = 0.5 * (erf((u + 0.5) / (math.sqrt(2) * SIGMA)) - erf((u - 0.5) / (math.sqrt(2) * SIGMA)))
    k = np.zeros((2 * box_half + 1,) * 2)
    k[box_half - half : box_half + half + 1, box_half - half : box_half + half + 1] = np.outer(g, g)
    box = np.ones_like(k)

    def corr(a, kernel):
        return ndimage.correlate(np.asarray(a, np.float64), kernel, mode="constant", cval=0.0)

    ones = np.ones(data.shape)
    mu = corr(ones, k) / corr(ones, box)  # mean kernel value over the in-image part of the box
    filtered = corr(data, k) - mu * corr(data, box)
    w = np.where(n_map > 0, 1.0 / np.maximum(n_map, 1e-30), 1e6)
    q = corr(w, k**2) - 2 * mu * corr(w, k) + mu**2 * corr(w, box)
    n = np.maximum(n_map, 1e-30)
    z = filtered / np.sqrt(np.maximum(background + read_variance, 1.0 / n) * q)
    return np.where(n_map > 0, z, 0.0)


def _shifted_frame_counts(shape, shifts):
    """Frames covering each reference pixel when frame k is shifted by shifts[k] = (dx, dy) px (integers)."""
    n_map = np.zeros(shape, dtype=np.int32)
    for dx, dy in shifts:
        n_map[max(0, -dy) : min(shape[0], shape[0] - dy), max(0, -dx) : min(shape[1], shape[1] - dx)] += 1
    return n_map


@pytest.mark.parametrize("n_kind", ["uniform", "per_pixel", "shifted", "shifted_one_side"])
def test_matched_filter_matches_scipy_twin(n_kind):
    """Uniform n (closed form), any map (q from the whole map), and drift-shifted frames (closed form
    inside, q computed only in the bands along the edges)."""
    rng = np.random.default_rng(0)
    shape = (61, 74)
    xy = rng.uniform(0, 70, (8, 2))
    n_map = np.full(shape, 7.0, dtype=np.float32)
    if n_kind == "per_pixel":
        n_map = rng.integers(1, 40, shape).astype(np.float32)
        n_map[:, :3] = 0
    elif n_kind == "shifted":
        n_map = _shifted_frame_counts(shape, [(0, 0)] * 5 + [(2, -1), (3, 1), (-1, 2), (1, 3)] * 4)
    elif n_kind == "shifted_one_side":  # drift one way only: the uniform part touches two edges
        n_map = _shifted_frame_counts(shape, [(0, 0)] * 5 + [(1, 1), (2, 1), (3, 2)] * 4)
    image = _mean_image(rng, _render(shape, xy, 800, 15.0), n_map)
    uniform = 7.0 if n_kind == "uniform" else None
    background = _background_map(image, n_map, 2.0)
    data = image - background
    z, z_test, _ = _significance(data, background, n_map, uniform, SIGMA, 2.0, 5.0)
    expected = _twin_z(data.astype(np.float64), background.astype(np.float64), n_map, 2.0)
    np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-4)
    assert np.all(z_test <= z) and np.all(z_test[z < 5.0] == z[z < 5.0])
    if n_kind.startswith("shifted"):  # the bands path was taken
        plan = _filter_plan(SIGMA, *shape)
        core, _ = _energy_map(n_map, float(n_map.max()), plan.taps, plan.box_half, plan.sums, False)
        assert core[1] - core[0] > 20 and core[3] - core[2] > 20


def test_local_maxima_match_numpy_twin():
    rng = np.random.default_rng(1)
    z = ndimage.gaussian_filter(rng.standard_normal((80, 90)), 1.5).astype(np.float32) * 8
    radius, border, threshold = 3, 2, 1.0
    rows = np.empty(80 * 90, np.int64)
    cols = np.empty(80 * 90, np.int64)
    count = _detect_kernels.local_maxima(z, z, threshold, radius, border, rows, cols)
    peak = z == ndimage.maximum_filter(z, size=2 * radius + 1, mode="constant", cval=-np.inf)
    peak &= z >= threshold
    inner = np.zeros_like(peak)
    inner[border:-border, border:-border] = True
    expected = np.argwhere(peak & inner)
    assert count > 10
    np.testing.assert_array_equal(np.column_stack([rows[:count], cols[:count]]), expected)


def test_select_kth_matches_sort():
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 36, 101):
        values = rng.integers(0, 6, n).astype(np.float64)  # many ties
        for k in range(n):
            assert select_kth(values.copy(), n, k) == np.sort(values)[k]


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("n_frames", [1, 50])
def test_false_positive_rate_on_pure_noise(n_frames):
    rng = np.random.default_rng(10 + n_frames)
    found = [
        len(detect_spots(_mean_image(rng, np.full((256, 256), 20.0), n_frames), n_frames, psf_sigma_px=SIGMA))
        for _ in range(100)
    ]
    # Gaussian-field theory for this filter: ~0.015 peaks above 5 sigma per 256^2 image.
    assert np.mean(found) < 0.05, found


@pytest.mark.parametrize(("photons", "min_recall"), [(300, 0.95), (2000, 0.99)])
def test_recall_and_position_accuracy(photons, min_recall):
    rng = np.random.default_rng(photons)
    hits, errors, extra, estimates = [], [], 0, []
    for _ in range(3):
        xy = _spread_positions(rng, 256)
        image = _mean_image(rng, _render((256, 256), xy, photons, 20.0), 1)
        det = detect_spots(image, 1, psf_sigma_px=SIGMA)
        ok, distance = _match(det.xy, xy)
        hits.append(ok)
        errors.append(distance[ok])
        extra += len(det) - ok.sum()
        estimates.append(det.photons)
    recall, errors = np.concatenate(hits).mean(), np.concatenate(errors)
    assert recall >= min_recall
    assert extra == 0
    assert np.median(np.concatenate(estimates)) == pytest.approx(photons, rel=0.05)
    if photons >= 2000:
        assert math.sqrt(np.mean(errors**2)) <= 0.1 and np.percentile(errors, 99) <= 0.15


def test_noiseless_positions_are_unbiased():
    rng = np.random.default_rng(3)
    xy = _spread_positions(rng, 128, step=16)
    det = detect_spots(_render((128, 128), xy, 2000, 20.0).astype(np.float32), 100, psf_sigma_px=SIGMA)
    ok, distance = _match(det.xy, xy)
    assert ok.all() and distance.max() < 0.02


def test_sorted_by_significance_and_brightness():
    rng = np.random.default_rng(4)
    xy = np.array([[20.2, 30.7], [60.5, 40.1], [40.9, 80.3]])
    image = _mean_image(rng, _render((100, 100), xy, [500, 3000, 1200], 10.0), 1)
    det = detect_spots(image, 1, psf_sigma_px=SIGMA)
    assert len(det) == 3 and np.all(np.diff(det.significance) < 0)
    np.testing.assert_allclose(det.xy[0], xy[1], atol=0.2)


# ----------------------------------------------------------------------------- options
def test_exclude_xy_drops_known_spots():
    rng = np.random.default_rng(5)
    xy = _spread_positions(rng, 96, step=16)
    image = _mean_image(rng, _render((96, 96), xy, 1500, 10.0), 1)
    known = xy[::2] + 0.8  # known spots, slightly off (drift)
    det = detect_spots(image, 1, psf_sigma_px=SIGMA, exclude_xy=known, exclude_radius_px=2.0)
    ok, _ = _match(det.xy, xy[1::2])
    assert ok.all() and len(det) == len(xy[1::2])
    assert len(detect_spots(image, 1, psf_sigma_px=SIGMA, exclude_xy=np.zeros((0, 2)))) == len(xy)


def test_per_pixel_frame_counts():
    """Drift-shifted accumulation: edge columns saw fewer frames, some none at all."""
    rng = np.random.default_rng(6)
    shape = (128, 128)
    n_map = np.full(shape, 40, dtype=np.int32)
    n_map[:, 96:] = 3
    n_map[:, 124:] = 0
    noise_only = [
        len(detect_spots(_mean_image(rng, np.full(shape, 20.0), n_map), n_map, psf_sigma_px=SIGMA)) for _ in range(30)
    ]
    assert np.mean(noise_only) < 0.1, noise_only
    xy = np.array([[30.3, 40.6], [70.8, 90.2], [105.4, 60.5], [110.6, 20.1]])
    det = detect_spots(_mean_image(rng, _render(shape, xy, 400, 20.0), n_map), n_map, psf_sigma_px=SIGMA)
    ok, _ = _match(det.xy, xy)
    assert ok.all() and len(det) == len(xy)


@pytest.mark.parametrize("n_frames", [1, 50, 1000])
def test_non_flat_background_gives_no_false_positives(n_frames):
    rng = np.random.default_rng(7 + n_frames)
    yy, xx = np.mgrid[:256, :256]
    ramp = 5.0 + 55.0 * xx / 256 + 10.0 * yy / 256
    bump = 10.0 + 40.0 * np.exp(-((xx - 100) ** 2 + (yy - 150) ** 2) / (2 * 50.0**2))
    found = [
        len(detect_spots(_mean_image(rng, bg, n_frames), n_frames, psf_sigma_px=SIGMA))
        for bg in (ramp, bump)
        for _ in range(8)
    ]
    assert np.mean(found) < 0.2, found
    xy = _spread_positions(rng, 256, step=24)
    det = detect_spots(_mean_image(rng, _render((256, 256), xy, 1000, ramp), 1), 1, psf_sigma_px=SIGMA)
    ok, _ = _match(det.xy, xy)
    assert ok.all() and len(det) == len(xy)


def test_empty_and_invalid_input():
    empty = detect_spots(np.full((64, 64), 5.0, np.float32), 10, psf_sigma_px=SIGMA)
    assert isinstance(empty, Detections) and len(empty) == 0
    assert empty.xy.shape == (0, 2) and empty.significance.shape == (0,) and empty.photons.shape == (0,)
    assert len(detect_spots(np.zeros((32, 32), np.float32), np.zeros((32, 32)), psf_sigma_px=SIGMA)) == 0
    with pytest.raises(ValueError, match="2-D"):
        detect_spots(np.zeros((2, 8, 8)), 1, psf_sigma_px=SIGMA)
    with pytest.raises(ValueError, match="n_frames"):
        detect_spots(np.zeros((8, 8)), np.ones((4, 4)), psf_sigma_px=SIGMA)
    with pytest.raises(ValueError, match="psf_sigma_px"):
        detect_spots(np.zeros((8, 8)), 1, psf_sigma_px=0.0)
