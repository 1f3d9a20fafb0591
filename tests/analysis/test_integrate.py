"""Photometry: kernels vs a plain-Python twin, unbiasedness, calibrated variances, edges."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import erf

from plstream.analysis.integrate import Photometry, integrate_spots, integrate_spots_into, photometry_scratch
from plstream.analysis.kernels.integrate import _LEVEL_BINS, _gather_annulus, annulus_level, pixel_overlap

SIGMA = 1.3
GEOMETRY = {"aperture_radius_px": 3.0, "annulus_inner_px": 5.0, "annulus_outer_px": 9.0, "psf_sigma_px": SIGMA}


def _delta_e(u, mu):
    s = math.sqrt(2.0) * SIGMA
    return 0.5 * (erf((u - mu + 0.5) / s) - erf((u - mu - 0.5) / s))


def _render(shape, xy, photons, background, half=8):
    """Expected photons per pixel; each spot drawn in a (2 half + 1)^2 patch (spots far apart)."""
    image = np.full(shape, float(background))
    for x, y in xy:
        r0, c0 = max(0, round(y) - half), max(0, round(x) - half)
        r1, c1 = min(shape[0], round(y) + half + 1), min(shape[1], round(x) + half + 1)
        image[r0:r1, c0:c1] += photons * np.outer(_delta_e(np.arange(r0, r1), y), _delta_e(np.arange(c0, c1), x))
    return image


# ----------------------------------------------------------------------------- twin
def _twin_overlap(dx, dy, radius):
    """Area of pixel [dx-1/2, dx+1/2] x [dy-1/2, dy+1/2] inside the disc, by quadrature."""
    x0, x1 = max(dx - 0.5, -radius), min(dx + 0.5, radius)
    if x1 <= x0:
        return 0.0

    def chord(theta):  # x = r sin(theta): the half-chord r cos(theta) is smooth in theta
        h = radius * math.cos(theta)
        return max(0.0, min(dy + 0.5, h) - max(dy - 0.5, -h)) * radius * math.cos(theta)

    t0, t1 = math.asin(x0 / radius), math.asin(x1 / radius)
    kinks = [math.acos(min(abs(v) / radius, 1.0)) for v in (dy - 0.5, dy + 0.5)]
    kinks = sorted({k for t in kinks for k in (t, -t) if t0 < k < t1})
    return integrate.quad(chord, t0, t1, points=kinks or None, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def _twin_level(values, read_variance):
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    m = v[n // 2]
    below, ties = np.count_nonzero(v < m), np.count_nonzero(v == m)
    if ties >= 2:
        gaps = [m - v[v < m].max()] if below else []
        gaps += [v[v > m].min() - m] if below + ties < n else []
        median = m + (min(gaps) if gaps else 0.0) * ((n / 2 - below) / ties - 0.5)
    else:
        median = float(np.median(v))
    b = max(median, 0.0)
    return median + (min(b / (6 * (b + read_variance)), b) if b + read_variance > 0 else 0.0)


def _twin(image, centers, aperture_radius_px, annulus_inner_px, annulus_outer_px, psf_sigma_px, read_variance):
    height, width = image.shape
    rows = []
    for x, y in centers:
        ring = [
            image[r, c]
            for r in range(height)
            for c in range(width)
            if annulus_inner_px <= math.hypot(c - x, r - y) <= annulus_outer_px
        ]
        if len(ring) < 8:
            rows.append([np.nan] * 5)
            continue
        b = _twin_level(ring, read_variance)
        noise, share = max(b, 0.0) + read_variance, math.pi / (2 * len(ring))
        sw = sw2 = swd = 0.0
        for r in range(height):
            for c in range(width):
                w = _twin_overlap(c - x, r - y, aperture_radius_px)
                sw, sw2, swd = sw + w, sw2 + w * w, swd + w * image[r, c]
        total = swd - b * sw
        half = math.ceil(3 * psf_sigma_px)
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
        sp = spp = sppp = spd = 0.0
        for r in range(max(0, cy - half), min(height, cy + half + 1)):
            for c in range(max(0, cx - half), min(width, cx + half + 1)):
                p = _delta_e(r, y) * _delta_e(c, x)
                sp, spp, sppp, spd = sp + p, spp + p * p, sppp + p**3, spd + p * (image[r, c] - b)
        n_hat = spd / spp
        rows.append(
            [
                total,
                b,
                n_hat,
                max(total, 0.0) + noise * (sw2 + sw * sw * share),
                (max(n_hat, 0.0) * sppp + noise * spp + noise * sp * sp * share) / spp**2,
            ]
        )
    return np.array(rows).T


def test_kernel_matches_python_twin():
    rng = np.random.default_rng(0)
    shape = (34, 41)
    centers = np.array([[10.3, 12.8], [25.5, 20.0], [1.2, 30.6], [39.7, 2.4], [20.0, 16.5]])
    image = rng.poisson(_render(shape, centers[:2], 900, 12.0)).astype(np.float32)
    image[5, 5] = 200.0  # a hot pixel in an annulus
    phot = integrate_spots(image, centers, **GEOMETRY, read_variance=2.25)
    expected = _twin(image.astype(np.float64), centers, **GEOMETRY, read_variance=2.25)
    names = ["intensity", "background", "weighted", "intensity_variance", "weighted_variance"]
    for name, values in zip(names, expected):
        np.testing.assert_allclose(getattr(phot, name), values, rtol=1e-9, atol=1e-9, err_msg=name)


def test_pixel_overlap_is_exact():
    rng = np.random.default_rng(1)
    for radius in (0.3, 1.0, 2.7, 3.0, 4.45):
        x, y = rng.uniform(-0.5, 0.5, 2)
        grid = np.arange(-8, 9)
        total = sum(pixel_overlap(c - x, r - y, radius) for r in grid for c in grid)
        assert total == pytest.approx(math.pi * radius**2, abs=1e-11)
        for dx, dy in rng.uniform(-radius - 1, radius + 1, (20, 2)):
            assert pixel_overlap(dx, dy, radius) == pytest.approx(_twin_overlap(dx, dy, radius), abs=1e-11)


def test_annulus_level_handles_ties_and_matches_twin():
    rng = np.random.default_rng(2)
    for values in (rng.poisson(10.0, 61), rng.poisson(3.0, 40) / 2.0, rng.normal(50, 3, 33), np.full(10, 4.0)):
        expected = _twin_level(values, 1.0)
        assert _level(values, 1.0) == pytest.approx(expected, abs=1e-12)


def _level(values, read_variance=1.0):
    values = np.asarray(values, dtype=np.float64)
    return annulus_level(values.copy(), values.size, read_variance, np.empty(values.size + _LEVEL_BINS, np.int64))


def test_annulus_level_matches_twin_on_many_value_sets():
    """The binned median search gives what a full sort gives, for any kind of values."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(8, 250))
        kind = trial % 5
        if kind == 0:  # photons from integer ADU: few distinct values, many ties
            values = (rng.poisson(20.0, n) * 2.2 + 0.7) / 2.2 - 0.3
        elif kind == 1:  # continuous
            values = rng.normal(50.0, 4.0, n)
        elif kind == 2:  # a bright outlier stretches the range: most values share a bin
            values = np.append(rng.poisson(5.0, n - 1).astype(float), 1e6)
        elif kind == 3:  # negative, read-noise dominated
            values = rng.normal(-1.0, 0.5, n).round(2)
        else:  # two values only
            values = rng.choice([3.0, 4.0], n)
        assert _level(values, 1.5) == pytest.approx(_twin_level(values, 1.5), abs=1e-12), (trial, n)


def test_annulus_level_falls_back_for_non_finite_values():
    assert _level([5.0, 5.0, 5.0, 5.0]) == pytest.approx(_twin_level([5.0] * 4, 1.0), abs=1e-12)
    with_inf = [1.0, 2.0, 3.0, np.inf, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert np.isfinite(_level(with_inf))


def test_annulus_pixels_are_exactly_the_ring():
    rng = np.random.default_rng(8)
    image = rng.normal(size=(60, 60))
    rows, cols = np.mgrid[:60, :60]
    for _ in range(500):
        x, y = rng.uniform(-6, 66, 2)
        if rng.random() < 0.3:  # centres on and between pixels: distances exactly at the radii
            x, y = round(x) + rng.choice([0.0, 0.5]), float(round(y))
        inner = rng.uniform(0.5, 6.0)
        outer = inner + rng.uniform(0.1, 5.0)
        r0, r1 = max(0, math.ceil(y - outer)), min(59, math.floor(y + outer))
        c0, c1 = max(0, math.ceil(x - outer)), min(59, math.floor(x + outer))
        out = np.empty(max(r1 - r0 + 2, 0) * max(c1 - c0 + 2, 0) + 1)
        n = _gather_annulus(image, x, y, inner * inner, outer * outer, r0, r1, c0, c1, out)
        d2 = (cols - x) * (cols - x) + (rows - y) * (rows - y)
        expected = image[(d2 >= inner * inner) & (d2 <= outer * outer)]
        np.testing.assert_array_equal(out[:n], expected)


# ----------------------------------------------------------------------------- statistics
def test_unbiased_and_calibrated_on_4000_spots():
    rng = np.random.default_rng(3)
    photons, background, spacing, per_side = 1000.0, 10.0, 20, 20
    size = spacing * per_side
    g = spacing / 2 + spacing * np.arange(per_side)
    results, expected_ee = [], []
    for _ in range(10):
        xy = np.column_stack([a.ravel() for a in np.meshgrid(g, g)]) + rng.uniform(-0.5, 0.5, (per_side**2, 2))
        image = rng.poisson(_render((size, size), xy, photons, background)).astype(np.float32)
        results.append(integrate_spots(image, xy, **GEOMETRY))
        for x, y in xy:  # expected aperture fraction: sum of overlap weights x pixel PSF fractions
            cols, rows = np.arange(round(x) - 4, round(x) + 5), np.arange(round(y) - 4, round(y) + 5)
            w = np.array([[pixel_overlap(c - x, r - y, 3.0) for c in cols] for r in rows])
            expected_ee.append(np.sum(w * np.outer(_delta_e(rows, y), _delta_e(cols, x))))
    cat = {
        k: np.concatenate([getattr(p, k) for p in results])
        for k in ("intensity", "weighted", "background", "intensity_variance", "weighted_variance")
    }
    ee = np.array(expected_ee)
    assert cat["intensity"].size == 4000 and np.isfinite(cat["intensity"]).all()
    assert np.mean(cat["background"]) == pytest.approx(background, rel=0.01)
    assert np.mean(cat["weighted"]) == pytest.approx(photons, rel=0.01)
    assert np.mean(cat["intensity"]) == pytest.approx(photons * np.mean(ee), rel=0.01)
    sd_aperture = np.std(cat["intensity"] - photons * ee)
    sd_weighted = np.std(cat["weighted"] - photons)
    assert sd_aperture == pytest.approx(math.sqrt(np.mean(cat["intensity_variance"])), rel=0.1)
    assert sd_weighted == pytest.approx(math.sqrt(np.mean(cat["weighted_variance"])), rel=0.1)


def test_aperture_sum_is_smooth_under_subpixel_shifts():
    shape = (40, 40)
    previous = None
    sums = []
    for step in range(21):
        x = 18.0 + 0.1 * step
        image = _render(shape, [(x, 19.37)], 1000.0, 10.0)
        # moving spot, aperture on it
        sums.append(integrate_spots(image, np.array([[x, 19.37]]), **GEOMETRY, read_variance=1.0).intensity[0])
        # fixed spot, aperture moved across it
        fixed = integrate_spots(_render(shape, [(19.0, 19.37)], 1000.0, 10.0), np.array([[x, 19.37]]), **GEOMETRY)
        if previous is not None:
            assert abs(fixed.intensity[0] - previous) < 0.06 * previous  # no jumps, only the PSF slope
        previous = fixed.intensity[0]
    sums = np.array(sums)
    assert np.all(np.abs(np.diff(sums)) < 0.005 * sums[:-1])


def test_edges_give_finite_or_nan_never_an_exception():
    rng = np.random.default_rng(4)
    image = rng.poisson(10.0, (30, 30)).astype(np.float32)
    centers = np.array([[0.0, 0.0], [-3.0, 5.0], [29.0, 29.0], [40.0, 5.0], [-50.0, -50.0], [np.nan, 3.0], [15.0, 0.4]])
    phot = integrate_spots(image, centers, **GEOMETRY)
    for name in ("intensity", "background", "weighted", "intensity_variance", "weighted_variance"):
        values = getattr(phot, name)
        assert values.shape == (7,)
        finite = np.isfinite(values)
        assert finite[[0, 2, 6]].all() and not finite[[4, 5]].any()


def test_empty_and_preallocated_outputs():
    image = np.full((20, 20), 5.0, np.float32)
    empty = integrate_spots(image, np.zeros((0, 2)), **GEOMETRY)
    assert isinstance(empty, Photometry) and empty.intensity.shape == (0,)
    centers = np.array([[9.5, 10.2], [4.0, 14.0]])
    out = Photometry.empty(8)
    scratch = photometry_scratch(GEOMETRY["annulus_outer_px"], SIGMA)
    view = integrate_spots_into(image, centers, out, **GEOMETRY, scratch=scratch)
    assert len(view) == 2 and np.shares_memory(view.intensity, out.intensity)
    reference = integrate_spots(image, centers, **GEOMETRY)
    np.testing.assert_array_equal(view.weighted, reference.weighted)
    np.testing.assert_array_equal(out.intensity[:2], reference.intensity)
    with pytest.raises(ValueError, match="length >= 2"):
        integrate_spots_into(image, centers, Photometry.empty(1), **GEOMETRY)
    with pytest.raises(ValueError, match="annulus_inner_px < annulus_outer_px"):
        integrate_spots(image, centers, **{**GEOMETRY, "annulus_inner_px": 9.0})
