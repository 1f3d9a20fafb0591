"""Camera model: ADU -> photons (vs numpy), photon-transfer estimate, value resolution."""

import logging

import numpy as np
import pytest

from plstream.analysis.camera import CameraModel, estimate_camera_model, resolve_camera_model, to_photons

CAMERA = CameraModel(offset_adu=100.0, gain_adu_per_e=2.0, read_noise_e=1.5, origin={})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64])
def test_to_photons_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 250, (37, 53)).astype(dtype)
    expected = ((raw.astype(np.float64) - 100.0) / 2.0).astype(np.float32)
    np.testing.assert_array_equal(to_photons(raw, CAMERA), expected)


def test_to_photons_writes_into_out_and_handles_views_and_stacks():
    rng = np.random.default_rng(1)
    raw = rng.integers(90, 4000, (3, 20, 30)).astype(np.uint16)
    out = np.empty((20, 15), dtype=np.float32)
    result = to_photons(raw[1, :, ::2], CAMERA, out=out)
    assert result is out
    np.testing.assert_array_equal(out, ((raw[1, :, ::2] - 100.0) / 2.0).astype(np.float32))
    np.testing.assert_array_equal(to_photons(raw, CAMERA), ((raw - 100.0) / 2.0).astype(np.float32))
    with pytest.raises(ValueError, match="float32"):
        to_photons(raw[0], CAMERA, out=np.empty((20, 30)))


def test_camera_model_properties_and_validation():
    assert CAMERA.read_variance_photons == pytest.approx(2.25)
    d = CAMERA.to_dict()
    assert d == {"offset_adu": 100.0, "gain_adu_per_e": 2.0, "read_noise_e": 1.5, "origin": {}}
    with pytest.raises(ValueError, match="gain"):
        CameraModel(100.0, 0.0, 1.0)


def _raw_movie(seed, n_frames=50, shape=(128, 128), flat=False, offset=100.0, gain=2.0, read_noise_e=1.5):
    """Raw ADU frames: Poisson illumination (10-30 photons/px unless flat) + blinking bright spots."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    if flat:
        illumination = np.full(shape, 20.0)
    else:
        beam = np.exp(-((xx - 0.6 * w) ** 2 + (yy - 0.4 * h) ** 2) / (2 * 35.0**2))
        illumination = 10.0 + 10.0 * xx / w + 10.0 * beam
    spots = rng.uniform(6, min(shape) - 6, (12, 2))
    psf = [2000.0 / (2 * np.pi * 1.3**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2)) for x, y in spots]
    frames = np.empty((n_frames, h, w), dtype=np.uint16)
    for t in range(n_frames):
        expected = illumination + sum(p for p in psf if rng.random() < 0.5)
        electrons = rng.poisson(expected) + rng.normal(0.0, read_noise_e, shape)
        frames[t] = np.clip(np.rint(offset + gain * electrons), 0, 65535)
    return frames


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photon_transfer_estimate_recovers_offset_and_gain(seed):
    model = estimate_camera_model(_raw_movie(seed))
    assert abs(model.gain_adu_per_e - 2.0) / 2.0 < 0.05
    assert abs(model.offset_adu - 100.0) < 3.0
    assert model.read_noise_e == 1.5
    assert set(model.origin.values()) == {"estimated"}


def test_photon_transfer_estimate_with_few_frames_and_other_gain():
    model = estimate_camera_model(_raw_movie(5, n_frames=20, offset=400.0, gain=0.5))
    assert abs(model.gain_adu_per_e - 0.5) / 0.5 < 0.08
    assert abs(model.offset_adu - 400.0) < 3.0


def test_flat_illumination_warns_and_falls_back(caplog):
    frames = _raw_movie(3, flat=True)
    with caplog.at_level(logging.WARNING, logger="plstream.analysis.camera"):
        model = estimate_camera_model(frames)
    assert "camera.offset_adu" in caplog.text and "camera.gain_adu_per_e" in caplog.text
    assert model.gain_adu_per_e == 1.0
    # The fallback keeps the background level and its variance right (in its own units).
    photons = to_photons(frames.astype(np.float64), model)
    level, variance = np.median(photons.mean(axis=0)), np.median(photons.var(axis=0, ddof=1))
    assert variance == pytest.approx(level + 2.25, rel=0.1)


def test_constant_frames_do_not_crash(caplog):
    with caplog.at_level(logging.WARNING, logger="plstream.analysis.camera"):
        model = estimate_camera_model(np.full((12, 32, 32), 100, dtype=np.uint16))
    assert model.offset_adu == 100.0 and "too flat" in caplog.text


def test_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 10 frames"):
        estimate_camera_model(np.zeros((9, 16, 16)))
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        estimate_camera_model(np.zeros((16, 16)))


def test_resolve_priority_config_then_metadata_then_estimate():
    calls = []

    def estimate():
        calls.append(1)
        return CameraModel(90.0, 3.0, 2.0, {})

    metadata = {"offset_adu": 101.0, "gain_adu_per_e": 2.5, "read_noise_e": None}
    config = {"offset_adu": 99.0, "gain_adu_per_e": None, "read_noise_e": None}
    model = resolve_camera_model(metadata, config, estimate)
    assert (model.offset_adu, model.gain_adu_per_e, model.read_noise_e) == (99.0, 2.5, 2.0)
    assert model.origin == {"offset_adu": "config", "gain_adu_per_e": "metadata", "read_noise_e": "estimated"}
    assert calls == [1]

    full = resolve_camera_model(None, {"offset_adu": 1.0, "gain_adu_per_e": 1.0, "read_noise_e": 1.0}, estimate)
    assert set(full.origin.values()) == {"config"} and calls == [1]  # estimate not needed, not called


def test_resolve_without_estimate_names_the_missing_setting():
    with pytest.raises(ValueError, match="camera.gain_adu_per_e"):
        config = {"offset_adu": None, "gain_adu_per_e": None, "read_noise_e": 1.5}
        resolve_camera_model({"offset_adu": 100.0}, config, None)
