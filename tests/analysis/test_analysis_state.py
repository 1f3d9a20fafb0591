"""Running mean, on/off kernel and spot catalog against plain-python twins; the analyzer's fit pre-screen
and late detection bands against their plain versions."""

import numpy as np
import pytest
from scipy.special import erf

from plstream.acquire_adapters import SimulatedCamera, SimulationParams
from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.blinking import OnOffClassifier
from plstream.analysis.camera import CameraModel, to_photons
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.spots import SpotCatalog
from plstream.config import BlinkingSettings, load_settings


def test_running_mean_undoes_integer_drift():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 10, (20, 30)).astype(np.float32)
    mean = RunningMean(base.shape)
    total = np.zeros(base.shape)
    counts = np.zeros(base.shape, int)
    for dx, dy in [(0, 0), (1.2, -0.6), (-2.4, 1.9), (3, 0)]:
        sx, sy = int(np.rint(dx)), int(np.rint(dy))
        frame = np.zeros_like(base)
        for r in range(20):  # frame pixel (r + sy, c + sx) shows reference pixel (r, c)
            for c in range(30):
                if 0 <= r + sy < 20 and 0 <= c + sx < 30:
                    frame[r + sy, c + sx] = base[r, c]
                    total[r, c] += base[r, c]
                    counts[r, c] += 1
        mean.add(frame, np.array([dx, dy]))
    np.testing.assert_array_equal(mean.counts, counts)
    seen = counts > 0
    np.testing.assert_allclose(mean.mean()[seen], base[seen], rtol=1e-6)
    assert mean.n_frames == 4


def _classify_twin(intensity, sigma, level, s):
    states, levels = [], level.copy()
    for i, (v, n) in enumerate(zip(intensity, sigma)):
        if not (np.isfinite(v) and np.isfinite(n)) or n <= 0:
            states.append(-1)
            continue
        significant = v >= s.min_significance * n
        on = significant and (v >= s.on_level_fraction * levels[i] if np.isfinite(levels[i]) else True)
        states.append(int(on))
        if on:
            if not np.isfinite(levels[i]):
                levels[i] = v
            else:
                rate = s.level_rate_up if v > levels[i] else s.level_rate_down
                levels[i] += rate * (v - levels[i])
    return np.array(states), levels


def test_on_off_kernel_matches_python_twin_over_a_trace():
    rng = np.random.default_rng(3)
    s = BlinkingSettings()
    clf = OnOffClassifier(s)
    level = np.full(4, np.nan)
    for _ in range(300):
        truth_on = rng.random(4) < 0.5
        intensity = np.where(truth_on, 2000 * rng.uniform(0.2, 1.0, 4), 0) + rng.normal(0, 40, 4)
        intensity[rng.random(4) < 0.02] = np.nan
        sigma = np.full(4, 40.0)
        out = np.empty(4, np.int8)
        clf.classify(intensity, sigma, out)
        expected, level = _classify_twin(intensity, sigma, level, s)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_allclose(clf.on_level[:4], level)


def test_classifier_grows_with_new_spots_and_ignores_noise():
    clf = OnOffClassifier(BlinkingSettings())
    out = np.empty(1, np.int8)
    clf.classify(np.array([50.0]), np.array([40.0]), out)
    assert out[0] == 0  # 1.25 sigma is noise, not a spot turning on
    out = np.empty(3, np.int8)
    clf.classify(np.array([50.0, 1500.0, 2000.0]), np.array([40.0, 40.0, 40.0]), out)
    assert list(out) == [0, 1, 1]


def test_spot_catalog_ids_and_weighted_refinement():
    cat = SpotCatalog(capacity=2)
    ids = cat.add(np.array([[10.0, 10.0], [20.0, 5.0], [3.0, 3.0]]), frame_index=0)
    assert list(ids) == [0, 1, 2] and len(cat) == 3
    assert np.isinf(cat.position_variance()).all()
    use = np.array([True, True, False])
    cat.refine(np.array([[10.2, 9.9], [20.0, 5.0], [0, 0]]), np.full(3, 0.01), use)
    np.testing.assert_allclose(cat.xy[0], [10.2, 9.9])  # first fit replaces the detection
    cat.refine(np.array([[10.0, 10.1], [20.0, 5.0], [0, 0]]), np.full(3, 0.01), use)
    np.testing.assert_allclose(cat.xy[0], [10.1, 10.0])  # then equal-weight average
    np.testing.assert_allclose(cat.position_variance()[:2], 0.005)
    assert cat.xy[2].tolist() == [3.0, 3.0]
    ids = cat.add(np.array([[50.0, 50.0]]), frame_index=7)
    assert ids.tolist() == [3] and cat.first_frame.tolist() == [0, 0, 0, 7]


# ----------------------------------------------------------------------------- running mean from raw frames
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.int32, np.float32])
def test_raw_frames_give_the_mean_of_their_photons(dtype):
    """add_raw (integer sums, folded into photons every raw_sum_frames) against to_photons + add."""
    rng = np.random.default_rng(9)
    shape = (23, 31)
    camera = CameraModel(offset_adu=20.0, gain_adu_per_e=1.7, read_noise_e=1.0, origin={})
    fast = RunningMean(shape, raw_sum_frames=3)
    plain = RunningMean(shape)
    photons = np.empty(shape, dtype=np.float32)
    for t in range(8):
        raw = rng.integers(0, 120, shape).astype(dtype)
        drift = np.array([1.6 * np.sin(t), -1.2 * np.cos(t)])
        fast.add_raw(raw, camera.offset_adu, camera.gain_adu_per_e, drift, photons)
        expected = to_photons(raw, camera)
        np.testing.assert_allclose(photons, expected, rtol=1e-6, atol=1e-6)
        plain.add(expected, drift)
        np.testing.assert_allclose(fast.mean(), plain.mean(), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(fast.counts, plain.counts)
    assert fast.n_frames == plain.n_frames == 8


def test_mean_of_a_band_is_that_band_of_the_mean():
    rng = np.random.default_rng(10)
    shape = (40, 17)
    mean = RunningMean(shape)
    photons = np.empty(shape, dtype=np.float32)
    for t in range(5):
        mean.add_raw(rng.integers(0, 50, shape).astype(np.uint16), 3.0, 2.0, np.array([t - 2.4, 1.5 - t]), photons)
    whole, counts = mean.mean(), mean.counts.copy()
    for start, stop in [(0, 40), (3, 11), (30, 40), (39, 60)]:
        band, band_counts = mean.mean_and_counts(start, stop)
        np.testing.assert_array_equal(band, whole[start:stop])
        np.testing.assert_array_equal(band_counts, counts[start:stop])
        np.testing.assert_array_equal(mean.counts_rows(start, stop), counts[start:stop])


# ----------------------------------------------------------------------------- analyzer: fit pre-screen, late bands
def _movie(seed, n_frames=160, shape=(96, 96), n_emitters=14):
    params = SimulationParams(shape=shape, n_frames=n_frames, n_emitters=n_emitters)
    camera = SimulatedCamera(params, seed=seed)
    model = CameraModel(params.offset_adu, params.gain_adu_per_e, params.read_noise_e, {})
    return [camera.render_frame(t) for t in range(n_frames)], model, params


def _run(frames, model, shape, overrides):
    analyzer = StreamingAnalyzer(load_settings(overrides=overrides), shape, model)
    records = []
    for t, raw in enumerate(frames):
        records += analyzer.process(t, 0.01 * t, raw)
    return analyzer, records + analyzer.finish()


def test_prescreen_skips_only_fits_that_would_fail():
    frames, model, params = _movie(seed=12)
    every, all_records = _run(frames, model, params.shape, ["fit.prescreen_sigma=0"])
    screened, records = _run(frames, model, params.shape, [])
    assert screened.fits_made < 0.8 * every.fits_made  # the OFF spots are not fitted
    success_all = np.concatenate([r.fit_success for r in all_records])
    success = np.concatenate([r.fit_success for r in records])
    assert success.shape == success_all.shape
    assert np.count_nonzero(success != success_all) <= 0.002 * success.size
    drift_all = np.array([r.drift_xy for r in all_records])
    drift = np.array([r.drift_xy for r in records])
    assert np.abs(drift - drift_all).max() < 0.01


def _late_spots_movie(n_frames=220, shape=(96, 96)):
    """Spots on a flat background, two of them appearing only at frames 90 and 150 (raw ADU, offset 100)."""
    rng = np.random.default_rng(14)
    edges_r, edges_c = np.arange(shape[0] + 1) - 0.5, np.arange(shape[1] + 1) - 0.5
    spots = [
        (20.3, 15.6, 0),
        (70.8, 22.1, 0),
        (45.5, 48.2, 0),
        (15.2, 80.4, 0),
        (80.1, 75.7, 0),
        (33.6, 62.3, 90),
        (60.4, 88.8, 150),
    ]
    images = []
    for x, y, _ in spots:
        ex = np.diff(0.5 * erf((edges_c - x) / (np.sqrt(2) * 1.3)))
        ey = np.diff(0.5 * erf((edges_r - y) / (np.sqrt(2) * 1.3)))
        images.append(1500.0 * np.outer(ey, ex))
    frames = []
    for t in range(n_frames):
        expected = np.full(shape, 20.0) + sum(im for im, (_, _, t0) in zip(images, spots) if t >= t0)
        frames.append((rng.poisson(expected) + 100).astype(np.uint16))
    model = CameraModel(offset_adu=100.0, gain_adu_per_e=1.0, read_noise_e=1.0, origin={})
    return frames, model, shape, np.array([(x, y) for x, y, _ in spots]), np.array([t0 for *_, t0 in spots])


def test_late_bands_find_late_spots():
    frames, model, shape, truth, appears = _late_spots_movie()
    for band in (0, 24):  # whole image; 4 bands, one pass per 40 frames
        analyzer, _ = _run(frames, model, shape, [f"detection.late_band_px={band}", "psf.sigma_px=1.3"])
        assert len(analyzer.spots) == len(truth), band
        for (x, y), t0 in zip(truth, appears):
            distance = np.hypot(*(analyzer.spots.xy - (x, y)).T)
            k = int(np.argmin(distance))
            assert distance[k] < 0.3
            found = analyzer.spots.first_frame[k]
            assert t0 <= found <= t0 + (10 if band == 0 else 40) + 10, (band, t0, found)


def test_frame_work_keeps_warm_starts_and_backgrounds_when_it_grows():
    from plstream.analysis.analyzer import _FrameWork

    work = _FrameWork().ensure(10)
    work.warm[:10] = np.arange(50.0).reshape(10, 5)
    work.last_background[:10] = np.arange(10.0)
    grown = work.ensure(work.capacity + 1)
    assert grown.capacity > 10
    np.testing.assert_array_equal(grown.warm[:10], np.arange(50.0).reshape(10, 5))
    np.testing.assert_array_equal(grown.last_background[:10], np.arange(10.0))
    assert np.isnan(grown.warm[10:]).all() and np.isnan(grown.last_background[10:]).all()
