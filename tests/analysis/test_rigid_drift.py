"""Rigid drift (translation + rotation): the spot fit, its plain-numpy twin, smoothing, registration, the mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from plstream.analysis.drift import RotationSmoother, register_frame, rigid_from_spots
from plstream.analysis.kernels.drift import rigid_apply
from plstream.analysis.mean_image import RunningMean

CENTRE = (63.5, 63.5)


def _rotate(xy, theta, centre, d):
    c, s = math.cos(theta), math.sin(theta)
    u, v = xy[:, 0] - centre[0], xy[:, 1] - centre[1]
    return np.column_stack([c * u - s * v + centre[0] + d[0], s * u + c * v + centre[1] + d[1]])


def _procrustes_twin(p, q, w, centre):
    """Weighted least-squares rigid fit, the textbook way (SVD), as the kernel's plain-numpy twin."""
    pm, qm = np.average(p, axis=0, weights=w), np.average(q, axis=0, weights=w)
    h = ((p - pm) * w[:, None]).T @ (q - qm)
    u, _, vt = np.linalg.svd(h)
    r = (u @ vt).T
    theta = math.atan2(r[1, 0], r[0, 0])
    d = qm - np.asarray(centre) - r @ (pm - np.asarray(centre))
    return d, theta


def test_rigid_fit_matches_its_numpy_twin_and_drops_outliers():
    rng = np.random.default_rng(1)
    ref = rng.uniform(5, 123, (40, 2))
    variance = rng.uniform(0.02, 0.06, 40) ** 2
    truth_d, truth_theta = np.array([1.7, -2.3]), math.radians(0.8)
    fitted = _rotate(ref, truth_theta, CENTRE, truth_d) + rng.normal(size=(40, 2)) * np.sqrt(variance)[:, None]
    fitted[:3] += 3.0  # three fits on a neighbour
    usable = np.ones(40, bool)
    inliers = np.empty(40, bool)
    est = rigid_from_spots(
        ref, fitted - ref, variance, usable, center_xy=CENTRE, field_radius_px=90.0, inliers_out=inliers
    )
    assert not inliers[:3].any() and inliers[3:].all() and est.n_spots == 37 and est.rotation_fitted
    d, theta = _procrustes_twin(ref[3:], fitted[3:], 1.0 / variance[3:], CENTRE)
    assert est.theta == pytest.approx(theta, abs=1e-12)
    np.testing.assert_allclose(est.xy, d, atol=1e-10)
    assert abs(est.theta - truth_theta) < 4 * est.se_theta and abs(est.dx - truth_d[0]) < 4 * est.se_x
    assert 0.3 < est.chi2 < 2.0


def test_rotation_is_kept_when_the_spots_cannot_measure_it():
    rng = np.random.default_rng(2)
    ref = 60 + rng.normal(size=(5, 2))  # a tight cluster: no lever arm for a rotation
    fitted = ref + [0.4, 0.1]
    est = rigid_from_spots(
        ref,
        fitted - ref,
        np.full(5, 0.05**2),
        np.ones(5, bool),
        center_xy=CENTRE,
        predicted=(0, 0, 0.01),
        field_radius_px=90.0,
        rotation_gate_px=0.1,
    )
    assert not est.rotation_fitted and est.theta == 0.01 and math.isinf(est.se_theta)


def test_rigid_apply_is_the_documented_transform():
    xy = np.array([[10.0, 20.0], [63.5, 63.5], [100.0, 3.0]])
    out = np.empty_like(xy)
    rigid_apply(xy, math.cos(0.3), math.sin(0.3), *CENTRE, 1.5, -2.0, out)
    np.testing.assert_allclose(out, _rotate(xy, 0.3, CENTRE, (1.5, -2.0)))


def test_rotation_smoother_follows_a_ramp_without_lag_and_restarts_at_a_jump():
    rng = np.random.default_rng(3)
    smoother = RotationSmoother(10)
    errors, raw = [], []
    for t in range(60):
        truth = 1e-4 * t + (0.01 if t >= 40 else 0.0)
        measured = truth + rng.normal() * 1e-4
        value, _ = smoother.update(t, measured, 1e-4)
        if 20 <= t < 40 or t >= 45:
            errors.append(value - truth)
            raw.append(measured - truth)
    assert abs(np.mean(errors)) < 3e-5  # no lag on a steady rotation
    assert np.std(errors) < 0.75 * np.std(raw)  # less noise than one frame
    assert max(abs(e) for e in errors) < 5e-4  # the jump at 40 was followed at once


def _texture(rng, shape=(128, 128)):
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.5) * 400.0 + 1000.0


def test_registration_recovers_a_shift_and_rotation_and_refuses_pure_noise():
    rng = np.random.default_rng(4)
    base = _texture(rng, (160, 160))
    theta = math.radians(0.6)
    # frame: where the reference point p is seen at R (p - c) + c + d
    matrix = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = np.array([79.5, 79.5])
    d = np.array([2.3, -1.4])
    rows, cols = np.mgrid[0:160, 0:160].astype(float)
    q = np.stack([cols.ravel(), rows.ravel()]) - (centre + d)[:, None]
    p = matrix.T @ q + centre[:, None]
    frame = ndimage.map_coordinates(base, [p[1], p[0]], order=3, mode="nearest").reshape(160, 160)
    est = register_frame(base, frame, center_xy=tuple(centre), sigma_px=1.5, upsample=50)
    assert est.method == "registration" and est.significance > 8
    assert abs(est.dx - d[0]) < 0.1 and abs(est.dy - d[1]) < 0.1
    assert est.rotation_fitted and abs(est.theta - theta) < math.radians(0.05)
    noise = register_frame(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)), center_xy=CENTRE)
    assert math.isnan(noise.dx) and noise.significance < 8


def _gather_twin(frame, theta, centre, d):
    """Reference pixel (r, c) takes the frame pixel nearest to R (p - c0) + c0 + d; returns (sum, seen)."""
    h, w = frame.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    q = _rotate(np.column_stack([cols.ravel(), rows.ravel()]), theta, centre, d)
    xf, yf = np.floor(q[:, 0] + 0.5).astype(int), np.floor(q[:, 1] + 0.5).astype(int)
    inside = (xf >= 0) & (yf >= 0) & (xf < w) & (yf < h)
    out = np.zeros(h * w)
    out[inside] = frame[yf[inside], xf[inside]]
    return out.reshape(h, w), inside.reshape(h, w).astype(int)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_running_mean_adds_and_moves_rotated_frames_like_its_twin(dtype):
    rng = np.random.default_rng(5)
    shape = (96, 128)
    centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    frames = [rng.integers(100, 5000, shape).astype(dtype) for _ in range(3)]
    mean = RunningMean(shape)
    photons = np.empty(shape, np.float32)
    total, seen = np.zeros(shape), np.zeros(shape, int)
    placements = [((0.2, -0.3), 0.0), ((3.4, 1.2), 0.02), ((-1.6, 2.7), -0.015)]
    for frame, (drift, theta) in zip(frames, placements):
        predicted = np.array(drift) + [1.0, -1.0]  # added at a wrong prediction, then moved
        mean.add_raw(frame, 100.0, 2.0, predicted, photons, rotation=theta * 0.5, center_xy=centre)
        assert mean.move_last(frame, photons, np.array(drift), rotation=theta, center_xy=centre)
        working = (frame.astype(np.float64) - 100.0) / 2.0
        if theta == 0.0:  # an integer shift: the same as the nearest pixel without rotation
            s, n = _gather_twin(working, 0.0, centre, tuple(float(round(v)) for v in drift))
        else:
            s, n = _gather_twin(working, theta, centre, drift)
        total += s
        seen += n
    got, counts = mean.mean_and_counts()
    np.testing.assert_array_equal(counts, seen)
    expected = np.where(seen > 0, total / np.maximum(seen, 1), 0.0)
    np.testing.assert_allclose(got[seen > 0], expected[seen > 0], rtol=1e-5)
    # without the last frame: the mean of the first two
    without = mean.mean_without_last((frames[-1].astype(np.float64) - 100.0) / 2.0)
    s2, n2 = _gather_twin((frames[-1].astype(np.float64) - 100.0) / 2.0, -0.015, centre, (-1.6, 2.7))
    keep = (seen - n2) > 0
    np.testing.assert_allclose(without[keep], ((total - s2) / np.maximum(seen - n2, 1))[keep], rtol=1e-5)
