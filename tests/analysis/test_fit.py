"""Tests for plstream.analysis.fit: Poisson-MLE Gaussian fitting and its CRLB.

The references are slow, obviously correct numpy/scipy twins defined here: a
pixel-integrated Gaussian renderer, the Poisson (sCMOS) negative log-likelihood
minimised by scipy, and a finite-difference Fisher matrix.
"""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import erf

from plstream.analysis.fit import FitStatus, SpotFits, crlb_for, default_roi_size, fit_spots, fit_spots_into
from plstream.analysis.kernels import fit as kernels
from plstream.analysis.kernels import fit_model as model_kernels

SQRT2 = np.sqrt(2.0)


def pixel_gaussian(coords, mu, sigma):
    """Integral of a unit 1-D Gaussian over the pixels centred at ``coords``."""
    return 0.5 * (erf((coords - mu + 0.5) / (SQRT2 * sigma)) - erf((coords - mu - 0.5) / (SQRT2 * sigma)))


def model_roi(theta, cols, rows):
    x, y, photons, sigma, bg = theta
    return photons * np.outer(pixel_gaussian(rows, y, sigma), pixel_gaussian(cols, x, sigma)) + bg


def render(shape, params, background):
    """Noiseless image (photons) of spots ``params`` = (S, 4) rows (x, y, N, sigma) on a flat background."""
    image = np.full(shape, float(background))
    for x, y, photons, sigma in params:
        c0, r0 = int(round(x)) - 12, int(round(y)) - 12
        cols = np.arange(max(c0, 0), min(c0 + 25, shape[1]))
        rows = np.arange(max(r0, 0), min(r0 + 25, shape[0]))
        image[np.ix_(rows, cols)] += model_roi((x, y, photons, sigma, 0.0), cols, rows)
    return image


def grid_spots(rng, n, *, photons=1000.0, sigma=1.3, pitch=20, margin=15):
    """Spots on a grid with uniform +-0.5 px offsets; returns (image shape, (n, 4) params)."""
    per_row = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    x = margin + pitch * (idx % per_row) + rng.uniform(-0.5, 0.5, n)
    y = margin + pitch * (idx // per_row) + rng.uniform(-0.5, 0.5, n)
    shape = (2 * margin + pitch * ((n - 1) // per_row), 2 * margin + pitch * (per_row - 1))
    return shape, np.column_stack([x, y, np.full(n, photons), np.full(n, sigma)])


def roi_origin(center, roi, shape):
    c0 = min(max(int(np.floor(center[0] + 0.5)) - roi // 2, 0), shape[1] - roi)
    r0 = min(max(int(np.floor(center[1] + 0.5)) - roi // 2, 0), shape[0] - roi)
    return c0, r0


def reference_mle(data, cols, rows, start, r2):
    """scipy twin: minimise the sCMOS-Poisson negative log-likelihood (L-BFGS-B, numerical gradient)."""
    d = np.maximum(data + r2, 0.0)
    scale = np.array([1.0, 1.0, 1e3, 1.0, 10.0])  # search in O(1) units

    def nll(u):
        mu = model_roi(u * scale, cols, rows) + r2
        return float(np.sum(mu - d * np.log(mu)))

    bounds = [(None, None), (None, None), (1e-3, None), (0.2, None), (1e-3, None)]
    result = minimize(
        nll,
        np.asarray(start) / scale,
        method="L-BFGS-B",
        jac="3-point",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 2000},
    )
    return result.x * scale


def fd_crlb(theta, cols, rows, r2):
    """numpy twin: CRLB from a central-difference Jacobian of the model."""
    theta = np.asarray(theta, dtype=float)
    mu = model_roi(theta, cols, rows) + r2
    jac = []
    for i, h in enumerate(np.array([1e-5, 1e-5, 1e-5, 1e-6, 1e-5]) * np.maximum(np.abs(theta), 1.0)):
        step = np.zeros(5)
        step[i] = h
        jac.append(((model_roi(theta + step, cols, rows) - model_roi(theta - step, cols, rows)) / (2 * h)).ravel())
    jac = np.array(jac)
    fisher = (jac / mu.ravel()) @ jac.T
    return np.diag(np.linalg.inv(fisher))


@pytest.fixture(scope="module")
def noisy_frame():
    rng = np.random.default_rng(20240611)
    shape, spots = grid_spots(rng, 24, photons=800.0, sigma=1.2)
    spots[:, 2] *= rng.uniform(0.5, 3.0, len(spots))
    image = rng.poisson(render(shape, spots, 8.0)).astype(np.float32)
    centers = spots[:, :2] + rng.uniform(-0.7, 0.7, (len(spots), 2))
    return image, spots, centers


@pytest.fixture(scope="module", params=[7, 9], ids=["roi7", "roi9"])
def monte_carlo(request):
    rng = np.random.default_rng(7)
    shape, spots = grid_spots(rng, 2025, photons=1000.0, sigma=1.3)
    image = rng.poisson(render(shape, spots, 10.0)).astype(np.float32)
    fits = fit_spots(image, np.round(spots[:, :2]), sigma_init=1.3, roi_size=request.param)
    return spots, fits, request.param


@pytest.mark.parametrize("r2", [0.0, 4.0])
def test_agrees_with_scipy_reference(r2):
    rng = np.random.default_rng(11 + int(r2))
    shape, spots = grid_spots(rng, 10, photons=600.0, sigma=1.25)
    spots[:, 2] *= rng.uniform(0.5, 4.0, len(spots))
    expected = render(shape, spots, 6.0)
    image = rng.poisson(expected) + rng.normal(0.0, np.sqrt(r2), shape) if r2 else rng.poisson(expected)
    fits = fit_spots(image.astype(np.float32), spots[:, :2] + 0.3, sigma_init=1.4, roi_size=9, read_variance=r2)
    assert fits.success.all()
    for i, (x, y) in enumerate(spots[:, :2] + 0.3):
        c0, r0 = roi_origin((x, y), 9, shape)
        cols, rows = np.arange(c0, c0 + 9), np.arange(r0, r0 + 9)
        data = image.astype(np.float32)[r0 : r0 + 9, c0 : c0 + 9].astype(float)
        ref = reference_mle(data, cols, rows, [*spots[i], 6.0], r2)
        assert abs(fits.x[i] - ref[0]) < 2e-3 and abs(fits.y[i] - ref[1]) < 2e-3
        assert abs(fits.photons[i] / ref[2] - 1.0) < 1e-3
        assert abs(fits.sigma[i] - ref[3]) < 2e-3 and abs(fits.background[i] - ref[4]) < 1e-2


def test_accumulate_matches_numpy_twin():
    rng = np.random.default_rng(3)
    roi, r2 = 7, 2.5
    theta = np.array([3.3, 2.6, 900.0, 1.1, 7.0])
    cols = rows = np.arange(roi)
    data = np.maximum(rng.poisson(model_roi(theta, cols, rows)) + r2, 0.0)
    axes, grads, infos = np.empty((model_kernels.A_ROWS, roi)), np.empty((2, 5)), np.empty((2, 5, 5))
    points = theta[None, :].copy()
    ll = model_kernels.accumulate(data, r2, points, 0, axes, grads, infos, 0, True, False, False)
    model_kernels.accumulate(data, r2, points, 0, axes, grads, infos, 1, False, True, True)
    grad, fisher, observed = grads[0], infos[0], infos[1]

    def loglik(t):
        mu = model_roi(t, cols, rows) + r2
        return np.sum(data * np.log(mu) - mu)

    assert ll == pytest.approx(loglik(theta), rel=1e-12)
    h = 1e-6 * np.maximum(np.abs(theta), 1.0)
    unit = np.eye(5)
    fd_grad = [(loglik(theta + h[i] * unit[i]) - loglik(theta - h[i] * unit[i])) / (2 * h[i]) for i in range(5)]
    np.testing.assert_allclose(grad, fd_grad, rtol=1e-5, atol=1e-6 * np.abs(fd_grad).max())
    np.testing.assert_allclose(np.diag(np.linalg.inv(fisher)), fd_crlb(theta, cols, rows, r2), rtol=1e-6)
    hessian = np.empty((5, 5))  # observed information = minus the Hessian, by differences of loglik
    for i in range(5):
        for j in range(5):
            hi, hj = h[i] * unit[i] * 10, h[j] * unit[j] * 10
            hessian[i, j] = -(
                loglik(theta + hi + hj) - loglik(theta + hi - hj) - loglik(theta - hi + hj) + loglik(theta - hi - hj)
            ) / (4 * h[i] * h[j] * 100)
    np.testing.assert_allclose(observed, hessian, rtol=1e-4, atol=1e-6 * np.abs(hessian).max())


def test_linear_algebra_matches_numpy():
    rng = np.random.default_rng(13)
    a = rng.normal(size=(5, 5))
    mats = np.zeros((3, 5, 5))
    mats[1] = a @ a.T + 0.5 * np.eye(5)
    grads, vecs = rng.normal(size=(2, 5)), np.empty((model_kernels.V_ROWS, 5))
    free = np.ones((2, 5), dtype=bool)
    free[0, 3] = False  # sigma frozen on a bound
    lam, keep = 0.3, np.array([0, 1, 2, 4])
    assert model_kernels.solve_step(mats, 1, grads, 0, lam, free, vecs)
    damped = mats[1][np.ix_(keep, keep)] + lam * np.diag(np.diag(mats[1])[keep])
    np.testing.assert_allclose(vecs[model_kernels.V_STEP, keep], np.linalg.solve(damped, grads[0, keep]), rtol=1e-12)
    assert vecs[model_kernels.V_STEP, 3] == 0.0
    variance = model_kernels.factored_variance(mats, vecs, 2)  # of the matrix just factored
    assert variance == pytest.approx(np.linalg.inv(damped)[2, 2], rel=1e-12)
    out = np.empty((2, 5))
    assert model_kernels.inverse_diagonal(mats, 1, free, vecs, out, 1)
    np.testing.assert_allclose(out[1], np.diag(np.linalg.inv(mats[1])), rtol=1e-12)
    mats[0] = np.diag([1.0, 1.0, -1.0, 1.0, 1.0])
    assert not model_kernels.inverse_diagonal(mats, 0, free, vecs, out, 0)


def test_crlb_matches_finite_difference_fisher(noisy_frame):
    image, spots, centers = noisy_frame
    fits = fit_spots(image, centers, sigma_init=1.2, roi_size=7, read_variance=1.5)
    assert fits.success.all()
    for i in range(len(fits)):
        c0, r0 = roi_origin(centers[i], 7, image.shape)
        expected = fd_crlb(fits.params[i], np.arange(c0, c0 + 7), np.arange(r0, r0 + 7), 1.5)
        np.testing.assert_allclose(fits.crlb[i], expected, rtol=1e-4)
    truth = np.column_stack([spots, np.full(len(spots), 8.0)])
    bound = crlb_for(truth, 9, read_variance=1.5)
    for i, theta in enumerate(truth):
        c0, r0 = int(np.floor(theta[0] + 0.5)) - 4, int(np.floor(theta[1] + 0.5)) - 4
        expected = fd_crlb(theta, np.arange(c0, c0 + 9), np.arange(r0, r0 + 9), 1.5)
        np.testing.assert_allclose(bound[i], expected, rtol=1e-4)


@pytest.mark.parametrize("axis", [0, 1])
def test_monte_carlo_efficiency_and_calibration(monte_carlo, axis):
    spots, fits, roi = monte_carlo
    assert fits.success.mean() > 0.995
    ok = fits.success
    error = (fits.x if axis == 0 else fits.y)[ok] - spots[ok, axis]
    variance = fits.crlb[ok, axis]
    assert abs(error.mean()) < 0.02
    assert 0.95 <= error.std() / np.sqrt(variance.mean()) <= 1.10
    assert abs(np.std(error / np.sqrt(variance)) - 1.0) < 0.07
    truth = np.column_stack([spots[ok], np.full(ok.sum(), 10.0)])
    bound = crlb_for(truth, roi)[:, axis]
    assert np.median(variance) == pytest.approx(np.median(bound), rel=0.1)
    assert 0.95 <= error.std() / np.sqrt(np.median(fits.uncertainty[ok] ** 2)) <= 1.10
    assert error.std() / np.sqrt(bound.mean()) <= 1.10  # efficient: at the Cramer-Rao bound of the truth
    assert fits.iterations.mean() < 4.0  # cold starts converge in about 3.5 steps


@pytest.mark.parametrize("r2", [0.0, 3.0])
def test_noiseless_recovery(r2):
    rng = np.random.default_rng(5)
    shape, spots = grid_spots(rng, 12, sigma=1.0)
    spots[:, 2] = rng.uniform(100.0, 5000.0, len(spots))
    spots[:, 3] = rng.uniform(0.8, 1.6, len(spots))
    image = render(shape, spots, 4.0)
    fits = fit_spots(image, np.round(spots[:, :2]) + 0.4, sigma_init=1.2, roi_size=9, read_variance=r2)
    assert fits.success.all()
    np.testing.assert_allclose(fits.x, spots[:, 0], atol=1e-3)
    np.testing.assert_allclose(fits.y, spots[:, 1], atol=1e-3)
    np.testing.assert_allclose(fits.photons, spots[:, 2], rtol=1e-3)
    np.testing.assert_allclose(fits.sigma, spots[:, 3], atol=1e-3)
    np.testing.assert_allclose(fits.background, 4.0, atol=1e-2)


def test_integer_shift_invariance(noisy_frame):
    image, _, centers = noisy_frame
    big = np.pad(image, 10, mode="reflect")
    shifted = big[3 : 3 + image.shape[0], 7 : 7 + image.shape[1]]  # content moves by (+7, +3) in (x, y)
    a = fit_spots(big[10:-10, 10:-10], centers, sigma_init=1.2, roi_size=7)
    b = fit_spots(shifted, np.asarray(centers) + np.array([3.0, 7.0]), sigma_init=1.2, roi_size=7)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_allclose(b.x - a.x, 3.0, atol=1e-6)
    np.testing.assert_allclose(b.y - a.y, 7.0, atol=1e-6)
    np.testing.assert_allclose(b.photons, a.photons, rtol=1e-9)


def test_spots_near_edges_fit_inside_shifted_roi():
    rng = np.random.default_rng(9)
    spots = np.array(
        [
            [0.6, 20.3, 3000, 1.3],
            [40.2, 0.4, 3000, 1.3],
            [48.3, 30.7, 3000, 1.3],
            [25.0, 48.6, 3000, 1.3],
            [1.2, 1.1, 3000, 1.3],
            [47.8, 48.1, 3000, 1.3],
        ]
    )
    image = rng.poisson(render((49, 49), spots, 10.0)).astype(np.float32)
    fits = fit_spots(image, spots[:, :2] + 0.2, sigma_init=1.3, roi_size=9)
    assert fits.success.all()
    z = np.concatenate(
        [(fits.x - spots[:, 0]) / np.sqrt(fits.crlb[:, 0]), (fits.y - spots[:, 1]) / np.sqrt(fits.crlb[:, 1])]
    )
    assert np.all(np.abs(z) < 4.0)
    assert np.all(fits.uncertainty < 0.1)


def test_failures_are_reported_not_raised():
    rng = np.random.default_rng(2)
    image = rng.poisson(10.0, (40, 40)).astype(np.float32)
    image += render((40, 40), [[30.2, 30.4, 2000.0, 1.2]], 0.0).astype(np.float32)
    image[5, 6] = np.nan
    image[20, 21] = np.inf
    centers = np.array([[6.0, 5.0], [22.0, 19.0], [10.0, 30.0], [30.0, 30.0], [np.nan, 3.0], [45.0, 3.0]])
    fits = fit_spots(image, centers, sigma_init=1.2, roi_size=7)
    assert fits.status.tolist()[:2] == [FitStatus.NOT_FINITE] * 2
    assert fits.status[4] == FitStatus.NOT_FINITE and fits.status[5] == FitStatus.ROI_OUTSIDE_IMAGE
    assert not fits.success[2] or fits.photons_snr[2] < 5.0  # pure background
    assert fits.success[3] and fits.photons_snr[3] > 20.0
    assert np.isnan(fits.x[[0, 1, 4, 5]]).all()
    small = fit_spots(image[:6, :6], np.array([[3.0, 3.0]]), sigma_init=1.2, roi_size=7)
    assert small.status[0] == FitStatus.ROI_OUTSIDE_IMAGE


def test_not_converged_and_out_of_bounds_statuses():
    rng = np.random.default_rng(6)
    image = rng.poisson(render((40, 40), [[17.2, 20.0, 5000.0, 1.5]], 5.0)).astype(np.float32)
    # a warm start 4 px off: x may move 3.5 px (half the ROI) and stops on that bound
    start = np.array([[21.2, 20.0, 5000.0, 1.5, 5.0]])
    fits = fit_spots(image, np.array([[20.0, 20.0]]), sigma_init=1.5, roi_size=7, initial=start)
    assert fits.status[0] == FitStatus.OUT_OF_BOUNDS and fits.x[0] == pytest.approx(17.7)
    hurried = fit_spots(image, np.array([[18.0, 20.0]]), sigma_init=1.6, roi_size=7, max_iterations=1)
    assert hurried.status[0] == FitStatus.NOT_CONVERGED and hurried.iterations[0] == 1
    assert np.isfinite(hurried.x[0]) and np.isfinite(hurried.crlb[0]).all()


def test_pure_background_rois_are_not_confident():
    rng = np.random.default_rng(4)
    image = rng.poisson(10.0, (200, 200)).astype(np.float32)
    centers = rng.uniform(10, 190, (200, 2))
    fits = fit_spots(image, centers, sigma_init=1.3, roi_size=9)
    assert np.all(~fits.success | (fits.photons_snr < 5.0))
    bright = np.column_stack([centers, np.full((200, 3), [1000.0, 1.3, 10.0])])  # a spot that switched off
    fits = fit_spots(image, centers, sigma_init=1.3, roi_size=9, initial=bright)
    assert np.all(~fits.success | (fits.photons_snr < 5.0))


def test_parallel_equals_serial(noisy_frame):
    image, _, centers = noisy_frame
    many = np.concatenate([centers] * 5 + [[[np.nan, 1.0], [2.0, 2.0]]])
    serial = fit_spots(image, many, sigma_init=1.2, read_variance=2.0, parallel=False)
    parallel = fit_spots(image, many, sigma_init=1.2, read_variance=2.0, parallel=True)
    for name in SpotFits.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(parallel, name), getattr(serial, name))


@pytest.mark.parametrize("roi", [7, 9])
def test_parallel_is_bit_identical_on_a_seeded_mixed_batch(roi):
    """Bright, dim and dark spots, cold and warm starts, read noise: every output bit-identical."""
    rng = np.random.default_rng(2024)
    shape, spots = grid_spots(rng, 400, sigma=1.3, pitch=16)
    spots[:, 2] = rng.choice([0.0, 80.0, 250.0, 1000.0, 6000.0], len(spots))
    expected = render(shape, spots[spots[:, 2] > 0], 10.0)
    image = (rng.poisson(expected) + rng.normal(0.0, 1.5, shape)).astype(np.float32)
    centers = spots[:, :2] + rng.uniform(-0.6, 0.6, (len(spots), 2))
    warm = np.column_stack(
        [spots[:, :2], np.full(len(spots), 1000.0), np.full(len(spots), 1.3), np.full(len(spots), 10.0)]
    )
    warm[rng.random(len(spots)) < 0.5] = np.nan
    kwargs = {"sigma_init": 1.3, "roi_size": roi, "read_variance": 2.25, "initial": warm}
    serial = fit_spots(image, centers, parallel=False, **kwargs)
    parallel = fit_spots(image, centers, parallel=True, **kwargs)
    assert {FitStatus.OK, FitStatus.NO_SIGNAL} <= set(serial.status.tolist())  # the batch mixes both
    for name in SpotFits.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(parallel, name), getattr(serial, name), err_msg=name)
    again = fit_spots(image, centers, parallel=True, **kwargs)  # and deterministic run to run
    np.testing.assert_array_equal(again.params, parallel.params)


def peak_excess_twin(data):
    """numpy twin of ``kernels.fit.peak_excess``."""
    n = data.shape[0]
    boxes = np.array([[data[r : r + 3, c : c + 3].sum() for c in range(n - 2)] for r in range(n - 2)])
    expected = 9.0 * data.mean()
    return (boxes.max() - expected) / np.sqrt(expected)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm_from_on"])
def test_off_rois_stop_early_with_the_no_spot_model(warm):
    """Pure background (a particle that blinked off): NO_SIGNAL after a few steps, no NaN, the null model."""
    rng = np.random.default_rng(31)
    r2 = 1.0
    image = (rng.poisson(10.0, (160, 160)) + rng.normal(0.0, 1.0, (160, 160))).astype(np.float32)
    centers = rng.uniform(8, 152, (300, 2))
    initial = None
    if warm:  # the last ON frame's fit, as the analyzer passes it
        initial = np.column_stack([centers, np.full((300, 3), [1500.0, 1.3, 10.0])])
    fits = fit_spots(image, centers, sigma_init=1.3, roi_size=9, read_variance=r2, initial=initial)
    no_signal = fits.status == FitStatus.NO_SIGNAL
    assert no_signal.mean() > 0.97 and not fits.success[no_signal].any()
    assert fits.iterations.mean() < 4.0 and np.median(fits.iterations) <= 3
    assert np.all(~fits.success | (fits.photons_snr < 5.0))
    assert np.isfinite(fits.params[no_signal]).all() and np.isfinite(fits.log_likelihood[no_signal]).all()
    assert np.all(fits.photons[no_signal] == 0.0) and np.all(fits.photons_snr[no_signal] == 0.0)
    assert np.isinf(fits.crlb[no_signal][:, [0, 1, 3]]).all()
    for i in np.flatnonzero(no_signal)[:40]:  # the no-spot model against numpy twins
        c0, r0 = roi_origin(centers[i], 9, image.shape)
        cols, rows = np.arange(c0, c0 + 9), np.arange(r0, r0 + 9)
        d = np.maximum(image[r0 : r0 + 9, c0 : c0 + 9].astype(float) + r2, 0.0)
        assert fits.background[i] == pytest.approx(d.mean() - r2, rel=1e-12)
        g = np.outer(pixel_gaussian(rows, fits.y[i], fits.sigma[i]), pixel_gaussian(cols, fits.x[i], fits.sigma[i]))
        jac = np.stack([g.ravel(), np.ones(81)])
        bound = np.diag(np.linalg.inv((jac / d.mean()) @ jac.T))
        np.testing.assert_allclose(fits.crlb[i, [2, 4]], bound, rtol=1e-9)
        mu = np.full_like(d, d.mean())
        ratio = np.sum(np.where(d > 0, d * np.log(mu / np.where(d > 0, d, 1.0)), 0.0) - mu + d)
        assert fits.log_likelihood[i] == pytest.approx(ratio, rel=1e-10)
        assert peak_excess_twin(d) < kernels.PEAK_VETO_Z
    if warm:  # where the spot was looked for
        np.testing.assert_allclose(fits.x[no_signal], centers[no_signal, 0], atol=1e-12)


def test_degenerate_dark_rois_do_not_crash():
    image = np.zeros((30, 30), np.float32)
    image[15:, :] = -3.0  # read noise below zero photons, clipped with read_variance
    centers = np.array([[7.0, 7.0], [20.0, 22.0], [15.0, 15.0]])
    for r2 in (0.0, 2.0):
        for initial in (None, np.tile([15.0, 15.0, 500.0, 1.3, 5.0], (3, 1))):
            fits = fit_spots(image, centers, sigma_init=1.3, roi_size=7, read_variance=r2, initial=initial)
            assert np.all(fits.status == FitStatus.NO_SIGNAL), fits.status
            assert np.isfinite(fits.params).all() and np.isfinite(fits.log_likelihood).all()
            assert np.all(fits.background >= 0.0) and np.all(fits.iterations <= 6)


def test_no_signal_veto_keeps_a_real_spot_fitting():
    """A bright spot the fit starts far from still fits (the data veto), and the rule can be turned off."""
    rng = np.random.default_rng(8)
    for _ in range(20):
        data = rng.poisson(10.0, (9, 9)).astype(float)
        assert kernels.peak_excess(data, np.empty((model_kernels.A_ROWS, 9))) == pytest.approx(peak_excess_twin(data))
    # a warm start 3.5 px off in a 7 px ROI: the background soaks up the spot and the photons
    # fall below 2 standard errors (without the veto every one of these ends NO_SIGNAL)
    start = np.array([[22.4, 20.0, 5000.0, 1.3, 10.0]])
    for _ in range(8):
        image = rng.poisson(render((40, 40), [[18.9, 20.0, 5000.0, 1.3]], 10.0)).astype(np.float32)
        fits = fit_spots(image, np.array([[20.0, 20.0]]), sigma_init=1.3, roi_size=7, initial=start)
        assert fits.status[0] in (FitStatus.OK, FitStatus.OUT_OF_BOUNDS) and abs(fits.x[0] - 18.9) < 0.1
    dark = rng.poisson(10.0, (200, 200)).astype(np.float32)
    centers = rng.uniform(10, 190, (200, 2))
    default = fit_spots(dark, centers, sigma_init=1.3, roi_size=9)
    assert np.all(default.photons_snr[default.success] >= 2.0)  # OK fits are significant at no_signal_snr
    rule_off = fit_spots(dark, centers, sigma_init=1.3, roi_size=9, no_signal_snr=0.0)
    assert (rule_off.status == FitStatus.NO_SIGNAL).mean() < 0.2  # only photons pushed onto zero
    assert rule_off.iterations.mean() > 3 * default.iterations.mean()


def test_warm_start_same_answer_fewer_iterations():
    rng = np.random.default_rng(12)
    shape, spots = grid_spots(rng, 100, photons=1500.0, sigma=1.3)
    frames = [rng.poisson(render(shape, spots, 10.0)).astype(np.float32) for _ in range(2)]
    centers = np.round(spots[:, :2])
    first = fit_spots(frames[0], centers, sigma_init=1.3)
    cold = fit_spots(frames[1], centers, sigma_init=1.3)
    warm = fit_spots(frames[1], centers, sigma_init=1.3, initial=first.params)
    again = fit_spots(frames[1], centers, sigma_init=1.3, initial=cold.params)
    assert cold.success.all() and warm.success.all() and again.success.all()
    for result in (warm, again):
        np.testing.assert_allclose(result.x, cold.x, atol=1e-3)
        np.testing.assert_allclose(result.y, cold.y, atol=1e-3)
        np.testing.assert_allclose(result.photons, cold.photons, rtol=1e-3)
    assert warm.iterations.mean() < cold.iterations.mean()
    assert np.all(again.iterations <= 2)
    partial = first.params.copy()
    partial[::2] = np.nan
    partial[1::2, 3] = np.nan
    mixed = fit_spots(frames[1], centers, sigma_init=1.3, initial=partial)
    np.testing.assert_allclose(mixed.x, cold.x, atol=1e-3)


def test_into_buffers_and_empty_input(noisy_frame):
    image, _, centers = noisy_frame
    n = len(centers)
    out = (np.empty((n, 5)), np.empty((n, 5)), np.empty(n), np.empty(n, np.int32), np.empty(n, np.int8))
    fit_spots_into(image, centers, *out, sigma_init=1.2)
    fits = fit_spots(image, centers, sigma_init=1.2)
    np.testing.assert_array_equal(out[0], fits.params)
    np.testing.assert_array_equal(out[4], fits.status)
    empty = fit_spots(image, np.empty((0, 2)), sigma_init=1.2, parallel=True)
    assert len(empty) == 0 and empty.crlb.shape == (0, 5) and empty.success.shape == (0,)
    assert fit_spots(image.astype(np.uint16), centers[:2], sigma_init=1.2).success.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"roi_size": 8}, "Round up to 9"),
        ({"roi_size": 65}, "odd integer from 5 to 63"),
        ({"sigma_init": 0.0}, "sigma_init"),
        ({"read_variance": -1.0}, "read_variance"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"no_signal_snr": -1.0}, "no_signal_snr"),
        ({"initial": np.zeros((3, 5))}, "initial must have shape"),
        ({"centers_xy": np.zeros((2, 3))}, "centers_xy"),
        ({"image": np.zeros((2, 8, 8))}, "2-D"),
    ],
)
def test_invalid_input_says_what_to_do(kwargs, message):
    args = {"image": np.zeros((16, 16), np.float32), "centers_xy": np.full((2, 2), 8.0), "sigma_init": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit_spots(args.pop("image"), args.pop("centers_xy"), **args)
    with pytest.raises(ValueError, match="status_out must be a int8"):
        fit_spots_into(
            np.zeros((9, 9)),
            np.zeros((1, 2)),
            np.empty((1, 5)),
            np.empty((1, 5)),
            np.empty(1),
            np.empty(1, np.int32),
            np.empty(1, np.int64),
            sigma_init=1.0,
        )
    with pytest.raises(TypeError, match="real numbers"):
        fit_spots(np.zeros((9, 9), complex), np.zeros((1, 2)), sigma_init=1.0)


def test_default_roi_size():
    assert [default_roi_size(s) for s in (0.5, 1.0, 1.3, 2.0, 4.0, 10.0, 12.0)] == [5, 7, 9, 13, 25, 61, 63]
