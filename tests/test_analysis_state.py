"""Running mean, on/off kernel and spot catalog against plain-python twins."""

import numpy as np

from plstream.analysis.blinking import OnOffClassifier
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.spots import SpotCatalog
from plstream.config import BlinkingSettings


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
    for t in range(300):
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
