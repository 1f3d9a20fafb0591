"""The multi-threaded analysis (``fit.parallel = true``) gives exactly the serial results.

Every parallel kernel cuts its work into the same fixed blocks as its serial
twin (blocks of spots for fits and photometry, blocks of image rows for the
ADU conversion, the running mean and detection) and runs the same code on
each block; only which thread runs a block differs. No sum is split
differently between the two (a running sum restarts at each block boundary in
both), so the records are bit-identical, not merely within rounding: the
comparisons below are exact. (Were a kernel ever to reduce across threads,
its summation order would depend on the thread count and the tolerance here
would have to become ~1e-9 relative; none does.)
"""

from __future__ import annotations

import dataclasses
import os

import numba
import numpy as np
import pytest

from plstream.acquire_adapters import TiffStackSource
from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.camera import CameraModel
from plstream.analysis.detect import detect_spots
from plstream.analysis.integrate import Photometry, integrate_spots_into
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.result_file import FrameRecord
from plstream.config import load_settings

_FIELDS = [f.name for f in dataclasses.fields(FrameRecord)]


def _analyze(path, params, parallel: bool):
    settings = load_settings(overrides=[f"fit.parallel={'true' if parallel else 'false'}"])
    camera = CameraModel(params.offset_adu, params.gain_adu_per_e, params.read_noise_e, {})
    analyzer = StreamingAnalyzer(settings, params.shape, camera)
    records = []
    with TiffStackSource(path) as source:
        for frame in source:
            records += analyzer.process(frame.seq, frame.timestamp, frame.data)
    records += analyzer.finish()
    return analyzer, records


def test_more_than_one_thread_is_available():
    # Otherwise the comparisons below would compare the serial path with itself.
    assert numba.get_num_threads() >= 2, "set NUMBA_NUM_THREADS >= 2 to test the parallel path"


def test_parallel_records_equal_serial_records(small_movie):
    path, _, params = small_movie
    serial, expected = _analyze(path, params, parallel=False)
    parallel, got = _analyze(path, params, parallel=True)
    assert len(got) == len(expected) == params.n_frames
    for a, b in zip(expected, got):
        for name in _FIELDS:
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=f"frame {a.index}: {name}")
    np.testing.assert_array_equal(parallel.spots.xy, serial.spots.xy)
    np.testing.assert_array_equal(parallel.running_mean(), serial.running_mean())
    assert parallel.fits_made == serial.fits_made


def _shifted_counts(shape, shifts):
    mean = RunningMean(shape)
    frame = np.zeros(shape, dtype=np.float32)
    for shift in shifts:
        mean.add(frame, np.asarray(shift, dtype=np.float64))
    return mean.counts


@pytest.mark.parametrize("per_pixel", [False, True])
def test_detection_parallel_equals_serial(per_pixel):
    rng = np.random.default_rng(4)
    shape = (150, 170)  # not a multiple of the row blocks
    expected = np.full(shape, 20.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for x, y in rng.uniform(5, 145, (25, 2)):
        expected += 40.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2))
    counts = _shifted_counts(shape, [(0, 0), (1.2, -0.4), (2.6, 1.7), (-1.1, 3.2)] * 5) if per_pixel else 20
    n = np.maximum(counts, 1)
    image = (rng.poisson(expected * n) / n).astype(np.float32)
    results = [detect_spots(image, counts, psf_sigma_px=1.3, read_variance=2.0, parallel=p) for p in (False, True)]
    assert len(results[0]) > 10
    for name in ("xy", "significance", "photons"):
        np.testing.assert_array_equal(getattr(results[1], name), getattr(results[0], name))


def test_photometry_parallel_equals_serial():
    rng = np.random.default_rng(5)
    image = rng.poisson(15.0, (120, 130)).astype(np.float32)
    centers = np.vstack([rng.uniform(-3, 133, (70, 2)), [[np.nan, 4.0]]])  # some at or past the edges
    geometry = {"aperture_radius_px": 3.2, "annulus_inner_px": 5.2, "annulus_outer_px": 9.2, "psf_sigma_px": 1.3}
    out = [Photometry.empty(len(centers)) for _ in range(2)]
    for phot, parallel in zip(out, (False, True)):
        integrate_spots_into(
            image, centers, phot, **geometry, read_variance=2.0, offset_xy=(0.3, -0.2), parallel=parallel
        )
    for a, b in zip(out[0]._arrays(), out[1]._arrays()):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_running_mean_parallel_equals_serial(dtype):
    rng = np.random.default_rng(6)
    shape = (70, 45)
    means = [RunningMean(shape) for _ in range(2)]
    photons = [np.empty(shape, dtype=np.float32) for _ in range(2)]
    for t in range(12):
        raw = rng.integers(90, 400, shape).astype(dtype)
        drift = np.array([0.4 * t - 2.0, 2.0 - 0.3 * t])
        for mean, out, parallel in zip(means, photons, (False, True)):
            mean.add_raw(raw, 100.0, 2.3, drift, out, parallel=parallel)
        np.testing.assert_array_equal(photons[1], photons[0])
    np.testing.assert_array_equal(means[1].mean(), means[0].mean())
    np.testing.assert_array_equal(means[1].counts, means[0].counts)


def test_idle_numba_workers_sleep_unless_the_user_chose_otherwise(monkeypatch):
    from plstream.analysis._threads import prefer_passive_waiting

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    prefer_passive_waiting()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_passive_waiting()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
