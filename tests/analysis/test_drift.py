"""Drift estimation: robust spot average (vs a numpy twin) and the correlation fallback's sign."""

import numpy as np
import pytest
from scipy.special import erf

from plstream.analysis.drift import drift_by_correlation, drift_from_spots


def _numpy_twin(displacements, variances, usable, clip_sigma=5.0, floor=0.25):
    ok = usable & np.isfinite(variances) & (variances > 0) & np.isfinite(displacements).all(axis=1)
    d, w = displacements[ok], 1.0 / variances[ok]

    def wmedian(v):
        order = np.argsort(v, kind="stable")
        c = np.cumsum(w[order])
        return v[order][np.searchsorted(c, 0.5 * c[-1])]

    med = np.array([wmedian(d[:, 0]), wmedian(d[:, 1])])
    limit = np.maximum(clip_sigma / np.sqrt(w), floor)
    keep = (np.abs(d - med) <= limit[:, None]).all(axis=1)
    return (d[keep] * w[keep, None]).sum(0) / w[keep].sum(), keep.sum()


def test_robust_mean_matches_numpy_twin_and_rejects_outliers():
    rng = np.random.default_rng(1)
    n = 200
    d = rng.normal([0.7, -1.2], 0.04, (n, 2))
    var = rng.uniform(0.02, 0.06, n) ** 2
    d[:7] += rng.uniform(2, 5, (7, 2))  # mismatched / blinking outliers
    usable = rng.random(n) > 0.1
    est = drift_from_spots(d, var, usable)
    expected, used = _numpy_twin(d, var, usable)
    assert est.n_spots == used
    np.testing.assert_allclose([est.dx, est.dy], expected, atol=1e-12)
    assert abs(est.dx - 0.7) < 0.01 and abs(est.dy + 1.2) < 0.01


def test_no_usable_spot_gives_nan():
    est = drift_from_spots(np.zeros((3, 2)), np.ones(3), np.zeros(3, bool))
    assert est.n_spots == 0 and np.isnan(est.dx)
    est = drift_from_spots(np.zeros((0, 2)), np.zeros(0), np.zeros(0, bool))
    assert est.n_spots == 0


def _spots_image(shift_xy, rng, size=128):
    edges = np.arange(size + 1) - 0.5
    image = np.full((size, size), 20.0)
    for x, y in rng.uniform(12, size - 12, (25, 2)):
        ex = np.diff(0.5 * erf((edges - x - shift_xy[0]) / (np.sqrt(2) * 1.3)))
        ey = np.diff(0.5 * erf((edges - y - shift_xy[1]) / (np.sqrt(2) * 1.3)))
        image += 2000 * np.outer(ey, ex)
    return image


@pytest.mark.parametrize("shift", [(1.3, -0.4), (-2.6, 2.2), (0.0, 0.0)])
def test_correlation_reports_drift_in_the_public_convention(shift):
    """drift = where a reference point appears in the frame minus its reference position."""
    reference = _spots_image((0.0, 0.0), np.random.default_rng(5))
    moving = np.random.default_rng(9).poisson(_spots_image(shift, np.random.default_rng(5))).astype(float)
    est = drift_by_correlation(reference, moving, upsample=50)
    assert est.method == "correlation"
    assert abs(est.dx - shift[0]) < 0.05 and abs(est.dy - shift[1]) < 0.05
