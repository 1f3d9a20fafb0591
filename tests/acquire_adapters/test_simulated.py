"""The simulated camera: its truth, its pixel statistics (against numpy twins), determinism, pacing, files."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy import special, stats

from plstream.acquire_adapters import (
    FrameSource,
    InputError,
    SimulatedCamera,
    SimulationParams,
    TiffStackSource,
    load_truth,
    save_truth,
    write_movie,
)
from plstream.acquire_adapters.simulated import _kernels as _sim_kernels
from plstream.acquire_adapters.simulated import _model as _sim_model

SMALL = SimulationParams(shape=(96, 112), n_frames=400, n_emitters=12, drift_max_px=2.5, rotation_max_deg=1.5)


@pytest.fixture(scope="module")
def camera():
    return SimulatedCamera(SMALL, seed=11)


def _adu_pmf_twin(lam, offset, gain, read_adu, values):
    """Slow, obviously correct P(round(offset + gain * Poisson(lam) + read_adu * N(0, 1)) == value)."""
    k = np.arange(int(lam + 15 * math.sqrt(lam) + 40))
    pois = stats.poisson.pmf(k, lam)
    centre = offset + gain * k
    upper = special.ndtr((values[:, None] + 0.5 - centre[None, :]) / read_adu)
    lower = special.ndtr((values[:, None] - 0.5 - centre[None, :]) / read_adu)
    return (upper - lower) @ pois


def _chi2_pvalue(samples, values, pmf):
    counts = np.array([np.count_nonzero(samples == v) for v in values])
    expected = pmf * samples.size
    keep = expected > 10
    observed = counts[keep]
    # pool the sparse tails into one bin so every sample counts
    observed = np.append(observed, samples.size - observed.sum())
    expected = np.append(expected[keep], samples.size - expected[keep].sum())
    return stats.chisquare(observed, expected).pvalue


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    "change",
    [
        {"shape": (0, 10)},
        {"n_frames": 0},
        {"psf_sigma_px": 0.0},
        {"background_photons": -1.0},
        {"illumination_edge_ratio": 1.5},
        {"gain_adu_per_e": float("nan")},
        {"dtype": "float32"},
        {"on_truncation_frames": math.inf, "on_exponent": 0.9},
    ],
)
def test_bad_parameters_are_refused_with_their_name(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        SimulationParams(**change)


def test_emitters_that_do_not_fit_are_reported():
    with pytest.raises(ValueError, match="lower n_emitters"):
        SimulatedCamera(SimulationParams(shape=(40, 40), n_frames=5, n_emitters=50))


# ----------------------------------------------------------------------- truth
def test_truth_is_consistent(camera):
    truth, p = camera.truth, SMALL
    assert truth.on_fraction.shape == (p.n_frames, p.n_emitters) and truth.on_fraction.dtype == np.float32
    assert np.array_equal(truth.drift_xy[0], [0.0, 0.0]) and truth.rotation_deg[0] == 0.0
    assert np.max(np.abs(truth.drift_xy)) == pytest.approx(p.drift_max_px)
    assert np.max(np.abs(truth.rotation_deg)) == pytest.approx(p.rotation_max_deg)
    assert np.all(np.abs(np.diff(truth.drift_xy, axis=0)) < 0.2), "drift must be smooth"
    f = truth.on_fraction
    assert f.min() >= 0.0 and f.max() <= 1.0
    assert np.any((f > 0.01) & (f < 0.99)), "partly-on frames must occur"
    assert np.any(f == 0.0) and np.any(f == 1.0)
    assert np.all(f.sum(axis=0) >= 1.0), "every emitter is ON for at least one frame-equivalent"
    np.testing.assert_array_equal(truth.photons, (truth.brightness * f).astype(np.float32))
    xy = truth.positions_xy
    distances = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert distances[~np.eye(len(xy), dtype=bool)].min() >= p.min_separation_px
    assert xy.min() >= p.margin_px
    assert np.all(xy.max(axis=0) <= np.array([p.shape[1], p.shape[0]]) - 1 - p.margin_px)
    corner, centre = truth.background_map[0, 0], truth.background_map.max()
    assert corner / centre == pytest.approx(p.illumination_edge_ratio, abs=0.01)


def test_positions_in_frame_rotate_about_the_centre_then_translate(camera):
    truth = camera.truth
    t = 250
    height, width = SMALL.shape
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    a = np.deg2rad(truth.rotation_deg[t])
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    expected = (truth.positions_xy - c) @ rotation.T + c + truth.drift_xy[t]
    np.testing.assert_allclose(truth.positions_in_frame(t), expected, atol=1e-12)
    np.testing.assert_array_equal(truth.positions_in_frame(0), truth.positions_xy)


def test_blinking_is_not_degenerate(camera):
    f = camera.truth.on_fraction
    switches = np.count_nonzero(np.diff(f > 0.5, axis=0), axis=0)
    assert np.median(switches) >= 5, "emitters must blink many times over 400 frames"
    assert 0.1 < f.mean() < 0.9


# -------------------------------------------------------------------- sampling
def test_dwell_sampler_recovers_the_power_law_exponent():
    rng = np.random.default_rng(3)
    dwells = _sim_model.sample_dwells(rng, 20000, 1.6, 0.5, math.inf)
    assert dwells.min() >= 0.5
    mle = 1.0 + dwells.size / np.sum(np.log(dwells / 0.5))
    assert mle == pytest.approx(1.6, abs=0.03)


@pytest.mark.parametrize("exponent, truncation", [(1.6, 300.0), (1.5, 20.0), (0.8, 50.0)])
def test_dwell_sampler_follows_the_truncated_power_law(exponent, truncation):
    rng = np.random.default_rng(4)
    dwells = _sim_model.sample_dwells(rng, 5000, exponent, 0.5, truncation)
    grid = np.geomspace(0.5, 60 * truncation, 200001)
    density = grid**-exponent * np.exp(-grid / truncation)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    assert stats.kstest(dwells, lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3


def test_normal_and_poisson_kernels_match_their_distributions():
    zx, zr = _sim_kernels.ziggurat_tables()
    state = np.random.SeedSequence([5]).generate_state(4, np.uint64)
    z = np.empty(400_000)
    _sim_kernels.draw_normal(state, zx, zr, z)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert np.mean(np.abs(z) > 3.5) == pytest.approx(2 * stats.norm.sf(3.5), rel=0.15)
    for lam in (0.05, 4.0, 37.0):
        counts = np.empty(200_000, np.int64)
        _sim_kernels.draw_poisson(state, lam, counts)
        values = np.arange(counts.max() + 1)
        assert _chi2_pvalue(counts, values, stats.poisson.pmf(values, lam)) > 1e-3


@pytest.mark.parametrize("background, gain, offset, read_e", [(20.0, 2.0, 100.0, 1.5), (3.3, 1.7, 50.0, 0.8)])
def test_background_pixels_follow_the_camera_model(background, gain, offset, read_e):
    """Table path (background only) and step-by-step path (with signal) against the numpy twin."""
    shape = (256, 256)
    tables = _sim_model.background_tables(np.full(shape, background), offset, gain, read_e * gain, 65535.0)
    quantized, *kernel_tables = tables
    zx, zr = _sim_kernels.ziggurat_tables()
    for signal_photons in (0.0, 7.5):
        signal = np.full(shape, signal_photons)
        state = np.random.SeedSequence([6]).generate_state(4, np.uint64)
        out = np.empty(shape, np.uint16)
        _sim_kernels.expose(signal, quantized, *kernel_tables, zx, zr, offset, gain, read_e * gain, 65535.0, state, out)
        values = np.arange(out.min(), out.max() + 1)
        pmf = _adu_pmf_twin(background + signal_photons, offset, gain, read_e * gain, values)
        assert _chi2_pvalue(out.ravel(), values, pmf) > 1e-3


def test_bright_backgrounds_use_the_step_by_step_path():
    params = SimulationParams(
        shape=(128, 128), n_frames=3, n_emitters=0, background_photons=400.0, illumination_edge_ratio=1.0
    )
    camera = SimulatedCamera(params, seed=2)
    electrons = (camera.render_frame(1).astype(float) - params.offset_adu) / params.gain_adu_per_e
    assert electrons.mean() == pytest.approx(400.0, abs=0.3)
    expected_var = 400.0 + params.read_noise_e**2 + 1 / (12 * params.gain_adu_per_e**2)
    assert electrons.var() == pytest.approx(expected_var, rel=0.03)


# ------------------------------------------------------------ frame statistics
def test_spots_are_pixel_integrated_gaussians(camera):
    """The rendering kernel against scipy's erf, for one frame."""
    t = 123
    truth = camera.truth
    expected = truth.background_map.copy()
    y, x = np.mgrid[0 : SMALL.shape[0], 0 : SMALL.shape[1]]
    s = math.sqrt(2) * SMALL.psf_sigma_px
    half = math.ceil(5 * SMALL.psf_sigma_px)
    for (mx, my), photons in zip(truth.positions_in_frame(t), truth.photons[t].astype(float)):
        ex = 0.5 * (special.erf((x - mx + 0.5) / s) - special.erf((x - mx - 0.5) / s))
        ey = 0.5 * (special.erf((y - my + 0.5) / s) - special.erf((y - my - 0.5) / s))
        window = (np.abs(x - np.floor(mx + 0.5)) <= half) & (np.abs(y - np.floor(my + 0.5)) <= half)
        expected += photons * ex * ey * window
    np.testing.assert_allclose(camera.expected_photons(t), expected, rtol=1e-9, atol=1e-9)


def test_frames_hold_the_true_photons_and_background(camera):
    p = SMALL
    for t in (0, 57, 311):
        electrons = (camera.render_frame(t).astype(float) - p.offset_adu) / p.gain_adu_per_e
        excess = electrons.sum() - camera.truth.background_map.sum()
        true = float(camera.truth.photons[t].sum())
        sigma = math.sqrt(camera.expected_photons(t).sum() + electrons.size * (p.read_noise_e**2 + 1 / 12))
        assert abs(excess - true) < 5 * sigma, (t, excess, true, sigma)
    assert abs(
        camera.expected_photons(57).sum() - camera.truth.background_map.sum() - camera.truth.photons[57].sum()
    ) < 1e-3 * max(1.0, camera.truth.photons[57].sum())


def test_mean_background_is_right():
    params = SimulationParams(shape=(128, 128), n_frames=4, n_emitters=0)
    camera = SimulatedCamera(params, seed=8)
    frames = np.stack([camera.render_frame(t) for t in range(4)]).astype(float)
    electrons = (frames - params.offset_adu) / params.gain_adu_per_e
    background = camera.truth.background_map
    assert electrons.mean() == pytest.approx(background.mean(), abs=0.05)
    centre = electrons[:, 54:74, 54:74]
    assert centre.mean() == pytest.approx(background[54:74, 54:74].mean(), abs=0.2)
    assert background.max() == pytest.approx(params.background_photons, rel=1e-3)


# ----------------------------------------------------------------- determinism
def test_same_seed_same_movie_and_random_access(camera):
    again = SimulatedCamera(SMALL, seed=11)
    frames = [frame.data for frame in again]
    assert len(frames) == SMALL.n_frames
    for t in (0, 1, 199, 399):
        np.testing.assert_array_equal(frames[t], camera.render_frame(t))
    np.testing.assert_array_equal(camera.render_frame(5), camera.render_frame(5))
    other = SimulatedCamera(SMALL, seed=12)
    assert not np.array_equal(other.render_frame(5), camera.render_frame(5))
    assert not np.array_equal(camera.render_frame(5), camera.render_frame(6))


def test_camera_describes_itself_and_yields_frames(camera):
    assert isinstance(camera, FrameSource)
    d = camera.describe()
    assert d["source"] == "simulated" and d["shape"] == [96, 112] and d["dtype"] == "uint16"
    assert d["n_frames"] == 400 and d["seed"] == 11 and d["frame_rate_hz"] == 100.0
    assert d["camera"] == {"offset_adu": 100.0, "gain_adu_per_e": 2.0, "read_noise_e": 1.5}
    assert d["simulation"]["shape"] == [96, 112] and d["simulation"]["n_emitters"] == 12
    frame = next(iter(camera))
    assert frame.seq == 0 and frame.data.dtype == np.uint16 and frame.data.flags.c_contiguous


def test_timestamps_follow_the_frame_rate():
    params = SimulationParams(shape=(32, 32), n_frames=5, n_emitters=1, frame_rate_hz=50.0, margin_px=4.0)
    camera = SimulatedCamera(params, seed=1, wall_clock=lambda: 1000.0)
    assert [f.timestamp for f in camera] == pytest.approx([1000.0, 1000.02, 1000.04, 1000.06, 1000.08])


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacing_keeps_an_absolute_schedule():
    params = SimulationParams(shape=(32, 32), n_frames=6, n_emitters=1, frame_rate_hz=10.0, margin_px=4.0)
    fake = _FakeTime()
    camera = SimulatedCamera(params, seed=1, paced=True, clock=fake.clock, sleep=fake.sleep)
    released = []
    for frame in camera:
        released.append(fake.now)
        if frame.seq == 1:
            fake.now += 0.25  # the consumer is slow once: frames 2 and 3 are late, no sleep for them
    assert released == pytest.approx([100.0, 100.1, 100.35, 100.35, 100.4, 100.5])
    assert fake.sleeps == pytest.approx([0.1, 0.05, 0.1])


def test_unpaced_camera_never_sleeps():
    fake = _FakeTime()
    params = SimulationParams(shape=(32, 32), n_frames=4, n_emitters=1, margin_px=4.0)
    assert len(list(SimulatedCamera(params, paced=False, clock=fake.clock, sleep=fake.sleep))) == 4
    assert fake.sleeps == []


def test_close_ends_iteration():
    params = SimulationParams(shape=(32, 32), n_frames=10, n_emitters=1, margin_px=4.0)
    with SimulatedCamera(params) as camera:
        seen = []
        for frame in camera:
            seen.append(frame.seq)
            if frame.seq == 2:
                camera.close()
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError, match="closed"):
        next(iter(camera))


# ----------------------------------------------------------------------- files
def test_truth_round_trips_through_hdf5(camera, tmp_path):
    path = save_truth(camera.truth, tmp_path / "m.truth.h5")
    loaded = load_truth(path)
    assert loaded.params == SMALL and loaded.seed == 11
    assert loaded.camera == camera.truth.camera and loaded.psf_sigma_px == SMALL.psf_sigma_px
    for name in ("positions_xy", "brightness", "on_fraction", "photons", "drift_xy", "rotation_deg", "background_map"):
        original = getattr(camera.truth, name)
        assert getattr(loaded, name).dtype == original.dtype
        np.testing.assert_array_equal(getattr(loaded, name), original)
    np.testing.assert_array_equal(loaded.positions_in_frame(77), camera.truth.positions_in_frame(77))
    with h5py.File(path, "a") as f:
        f.attrs["truth_format_version"] = 99
    with pytest.raises(InputError, match="version 99"):
        load_truth(path)
    with pytest.raises(InputError, match="no such truth file"):
        load_truth(tmp_path / "missing.truth.h5")


def test_write_movie_gives_exactly_the_rendered_frames(tmp_path):
    params = SimulationParams(shape=(48, 64), n_frames=30, n_emitters=4, margin_px=6.0, min_separation_px=6.0)
    calls = []
    truth_path = write_movie(tmp_path / "movie.tif", params, seed=3, progress=lambda done, n: calls.append((done, n)))
    assert truth_path == tmp_path / "movie.truth.h5"
    assert calls[0] == (1, 30) and calls[-1] == (30, 30) and len(calls) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie.tif", "movie.truth.h5"]
    camera = SimulatedCamera(params, seed=3)
    with TiffStackSource(tmp_path / "movie.tif") as source:
        assert source.contiguous
        d = source.describe()
        assert d["n_frames"] == 30 and d["frame_rate_hz"] == params.frame_rate_hz
        assert d["camera"] == camera.describe()["camera"]
        frames = list(source)
    assert [f.seq for f in frames] == list(range(30))
    for frame in frames:
        np.testing.assert_array_equal(frame.data, camera.render_frame(frame.seq))
    np.testing.assert_array_equal(load_truth(truth_path).photons, camera.truth.photons)
