"""Data beyond the simulator's defaults: dark particles, unknown cameras, short movies, texture, wide particles.

The real frames (``bright_field_dir``) are five 500x500 bright-field images by
Viacheslav Shkirskiy (CC BY 4.0; see the data folder's README): dark particles
on a scratched field, drifting several px.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from plstream.acquire_adapters import SimulatedCamera, SimulationParams
from plstream.analysis import evaluate, load_results
from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.camera import CameraModel
from plstream.analysis.drift_references import parse_drift_references
from plstream.analysis.fit import fit_spots
from plstream.analysis.polarity import decide_polarity
from plstream.analysis.sanity import result_warnings
from plstream.analysis.session import AnalysisSession
from plstream.analysis.signal import WORKING_BACKGROUND, SignalModel, pixel_noise_adu, signal_model
from plstream.analysis.width import blob_widths
from plstream.config import load_settings
from plstream.stream.messages import EndMessage, FrameMessage, StartMessage


def _run_session(tmp_path, frames, *, source=None, overrides=(), name="r.h5"):
    """Analyze ``frames`` (a list of 2-D arrays) in-process; returns (results, summary)."""
    settings = load_settings(overrides=["output.overwrite=true", *overrides])
    session = AnalysisSession(settings, tmp_path / name, warm_up=False)
    shape = frames[0].shape
    session.handle(
        StartMessage(
            run_uid="r", source=source or {"source": "test"}, shape=shape, dtype=frames[0].dtype.name, timestamp=0.0
        )
    )
    for t, frame in enumerate(frames):
        session.handle(FrameMessage(run_uid="r", seq=t, timestamp=float(t), data=frame, metadata={}))
    session.handle(
        EndMessage(run_uid="r", n_frames=len(frames), reason="complete", message="", counters={}, timestamp=0.0)
    )
    summary = session.close("complete")
    return load_results(tmp_path / name), summary


def _simulated(params, seed=0):
    camera = SimulatedCamera(params, seed=seed)
    return camera, [camera.render_frame(t) for t in range(params.n_frames)]


# ----------------------------------------------------------------------------- signal model, polarity, noise
def test_pixel_noise_is_measured_from_one_frame_despite_gradients_and_particles():
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:200, 0:200]
    frame = 1000.0 + 3.0 * rows + 2.0 * cols + rng.normal(0, 25.0, (200, 200))
    frame[50:60, 50:60] -= 500.0  # a dark particle
    assert pixel_noise_adu(frame) == pytest.approx(25.0, rel=0.05)


def test_gaussian_signal_model_inverts_dark_contrast_and_converts_back():
    rng = np.random.default_rng(2)
    frames = [rng.normal(30000.0, 100.0, (64, 64)) for _ in range(3)]
    model = signal_model(None, "dark", frames)
    assert model.units == "ADU" and model.noise == "gaussian" and model.polarity == "dark"
    working = model.to_working(frames[0])
    assert np.median(working) == pytest.approx(WORKING_BACKGROUND, rel=1e-3)
    assert np.std(working) ** 2 == pytest.approx(WORKING_BACKGROUND, rel=0.1)  # variance = mean: Poisson-like
    dip = frames[0].copy()
    dip[30, 30] -= 1000.0  # 1000 ADU of light removed: +1000 ADU of contrast
    assert model.to_working(dip)[30, 30] > working[30, 30]
    amount = (model.to_working(dip)[30, 30] - working[30, 30]).astype(np.float64)
    assert model.amounts_out(np.array([amount]))[0] == pytest.approx(1000.0, rel=1e-3)
    assert model.levels_out(np.array([WORKING_BACKGROUND]))[0] == pytest.approx(model.level_adu, rel=1e-6)
    again = SignalModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.to_working(frames[1]), model.to_working(frames[1]))


def test_known_camera_with_bright_particles_keeps_the_photon_model():
    camera = CameraModel(100.0, 2.0, 1.5)
    model = signal_model(camera, "bright", [np.zeros((8, 8))])
    assert model.identity and model.units == "photons" and model.noise == "poisson"
    assert model.read_variance == pytest.approx(2.25)


def test_polarity_is_decided_from_the_first_frame():
    bright, _ = _simulated(SimulationParams(shape=(128, 128), n_frames=1, n_emitters=20))
    dark, _ = _simulated(
        SimulationParams(
            shape=(128, 128),
            n_frames=1,
            n_emitters=20,
            contrast="dark",
            background_photons=1000,
            photons_per_frame=3000,
        )
    )
    assert decide_polarity("auto", [bright.render_frame(0)]).polarity == "bright"
    decision = decide_polarity("auto", [dark.render_frame(0)])
    assert decision.polarity == "dark" and decision.origin == "auto" and decision.dark_blobs >= 3
    noise = np.random.default_rng(3).normal(100, 5, (128, 128))
    unsure = decide_polarity("auto", [noise])
    assert unsure.polarity == "bright" and "no clear contrast" in unsure.reason
    assert decide_polarity("dark", [noise]).origin == "settings"


# ----------------------------------------------------------------------------- widths, references, warnings
@pytest.mark.parametrize("sigma", [1.3, 4.0, 10.0])
def test_blob_widths_are_measured_up_to_ten_px_and_more(sigma):
    size = 161
    y, x = np.mgrid[0:size, 0:size]
    image = 100.0 + 5000.0 * np.exp(-((x - 80.3) ** 2 + (y - 79.6) ** 2) / (2 * sigma**2))
    widths = blob_widths(image, np.array([[80.0, 80.0]]))
    assert widths.sigma[0] == pytest.approx(sigma, rel=0.08) and not widths.at_bound[0]


def test_wide_particles_set_the_psf_width_and_their_fit_region(tmp_path):
    params = SimulationParams(
        shape=(160, 160),
        n_frames=4,
        n_emitters=6,
        psf_sigma_px=6.0,
        min_separation_px=40.0,
        margin_px=25.0,
        photons_per_frame=60000.0,
        bleach_on_frames=1e9,
        drift_max_px=0.5,
    )
    camera, frames = _simulated(params, seed=2)
    analyzer = StreamingAnalyzer(load_settings(), params.shape, CameraModel(**camera.truth.camera))
    for t, frame in enumerate(frames):
        analyzer.process(t, float(t), frame)
    assert analyzer.geometry.psf_sigma_px == pytest.approx(6.0, rel=0.1)
    assert analyzer.geometry.roi_size_px >= 37 and not analyzer.warnings


def test_drift_references_are_read_from_ids_the_pipeline_json_and_text(tmp_path):
    assert parse_drift_references("") is None
    assert parse_drift_references("4, 0 7").ids == (0, 4, 7)
    selections = {
        "image_sets": [
            {
                "selected_particles": [
                    {"bbox": [289, 248, 303, 264], "particle_id": 1},
                    {"bbox": [1, 2, 9, 10], "particle_id": 2},
                ],
                "selected_particles_for_drift": [1],
            }
        ]
    }
    (tmp_path / "sel.json").write_text(json.dumps(selections))
    refs = parse_drift_references(str(tmp_path / "sel.json"))
    np.testing.assert_array_equal(refs.boxes, [[289, 248, 303, 264]])
    np.testing.assert_allclose(refs.centers, [[295.5, 255.5]])
    (tmp_path / "pos.csv").write_text("x,y\n10.5, 20\n# a comment\n1 2 5 6\n")
    assert parse_drift_references(str(tmp_path / "pos.csv")).boxes.shape == (2, 4)
    with pytest.raises(ValueError, match="neither spot IDs"):
        parse_drift_references("no/such/file.json")
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="line 1"):
        parse_drift_references(str(tmp_path / "bad.txt"))


def test_warnings_say_when_spots_are_not_particles():
    crowded = result_warnings(
        n_spots=2150, frames=5, shape=(500, 500), fits_made=10000, fits_succeeded=600, method_counts={"spots": 4}
    )
    assert any("2150 spots" in w for w in crowded) and any("6 % of the 10000" in w for w in crowded)
    assert (
        result_warnings(
            n_spots=40, frames=100, shape=(256, 256), fits_made=3000, fits_succeeded=2800, method_counts={"spots": 99}
        )
        == []
    )
    none = result_warnings(
        n_spots=0, frames=20, shape=(64, 64), fits_made=0, fits_succeeded=0, method_counts={"kept": 19}
    )
    assert any(w.startswith("0 spots found") for w in none) and any("19 of 20 frames" in w for w in none)


# ----------------------------------------------------------------------------- short, empty and textured movies
def test_two_frames_of_an_unknown_camera_give_a_result_in_adu(tmp_path):
    params = SimulationParams(shape=(96, 96), n_frames=2, n_emitters=8, drift_max_px=1.0)
    _, frames = _simulated(params, seed=3)
    results, summary = _run_session(tmp_path, frames)  # no camera metadata: fewer than 10 frames to estimate it
    assert results.complete and results.n_frames == 2 and results.n_spots >= 6
    assert results.signal_units == "ADU" and summary["units"] == "ADU"
    assert results.camera["gain_adu_per_e"] is None and "too few" in results.camera["origin"]
    with __import__("h5py").File(tmp_path / "r.h5", "r") as f:
        assert f["/traces/intensity"].attrs["units"] == "ADU" and f["/images/mean"].attrs["units"] == "ADU/px/frame"
    assert np.isfinite(results.drift_xy).all()


def test_uniform_noise_finds_nothing_and_says_so(tmp_path):
    rng = np.random.default_rng(4)
    frames = [rng.normal(1000, 30, (96, 96)).astype(np.uint16) for _ in range(12)]
    results, summary = _run_session(tmp_path, frames)
    assert results.complete and results.n_spots == 0
    assert any(w.startswith("0 spots found") for w in summary["warnings"])
    assert summary["drift_methods"].get("kept") == 11 and np.all(results.drift_method[1:] == 3)


def test_pure_texture_makes_no_spots_and_is_registered(tmp_path):
    rng = np.random.default_rng(5)
    base = ndimage.gaussian_filter(rng.normal(0, 1, (160, 160)), 3) * 3000 + 20000
    frames = []
    for t in range(8):
        moved = ndimage.shift(base, (0.4 * t, 0.6 * t), order=3, mode="nearest")[20:140, 20:140]
        frames.append((moved + rng.normal(0, 20, moved.shape)).astype(np.uint16))
    results, summary = _run_session(tmp_path, frames)
    assert results.n_spots == 0 and summary["drift_methods"].get("registration") == 7
    truth = np.column_stack([0.6 * np.arange(8), 0.4 * np.arange(8)])
    assert np.abs(results.drift_xy - truth).max() < 0.4


# ----------------------------------------------------------------------------- the simulator beyond its defaults
def test_dark_particles_on_a_bright_field_are_found_and_tracked(tmp_path):
    params = SimulationParams(
        shape=(128, 128), n_frames=120, n_emitters=20, contrast="dark", background_photons=1000, photons_per_frame=3000
    )
    camera, frames = _simulated(params, seed=6)
    results, summary = _run_session(tmp_path, frames, source=camera.describe())
    assert summary["polarity"] == "dark" and summary["units"] == "photons"
    evaluation = evaluate(results, camera.truth)
    assert evaluation.recall >= 0.95 and evaluation.precision >= 0.95, evaluation.table()
    # a small field: fewer particles than the acceptance movie (benchmarks/real_samples.py dark: <= 0.05 px)
    assert evaluation.drift_rmse_px <= 0.08 and evaluation.trace_correlation_median >= 0.9, evaluation.table()


def test_a_rotating_stage_is_followed(tmp_path):
    params = SimulationParams(shape=(128, 128), n_frames=150, n_emitters=25, drift_max_px=3.0, rotation_max_deg=1.0)
    camera, frames = _simulated(params, seed=8)
    results, _ = _run_session(tmp_path, frames, source=camera.describe())
    evaluation = evaluate(results, camera.truth)
    assert evaluation.recall == 1.0 and evaluation.drift_rmse_px <= 0.03, evaluation.table()
    assert evaluation.rotation_rmse_deg <= 0.06 and evaluation.model_position_worst_emitter_px <= 0.06, (
        evaluation.table()
    )
    assert results.rotation_center_xy == (63.5, 63.5)
    translation_only, _ = _run_session(
        tmp_path, frames, source=camera.describe(), overrides=["drift.rotation=false"], name="t.h5"
    )
    assert evaluate(translation_only, camera.truth).model_position_worst_emitter_px > 0.1


# ----------------------------------------------------------------------------- real frames
def _particle_motion(frames, signal, start_xy):
    """The motion of one particle, fitted frame by frame (an independent measure of the drift)."""
    xy, out = np.asarray(start_xy, dtype=np.float64), []
    for frame in frames:
        fit = fit_spots(signal.to_working(frame), xy[None, :], sigma_init=1.6, roi_size=11)
        assert fit.success[0]
        xy = np.array([fit.x[0], fit.y[0]])
        out.append(xy)
    return np.asarray(out) - out[0]


def test_real_bright_field_frames(tmp_path, bright_field_dir):
    frames = [tifffile.imread(bright_field_dir / f"{i}.tif") for i in range(1, 6)]
    results, summary = _run_session(tmp_path, frames, source={"source": "tiff_folder", "path": str(bright_field_dir)})
    assert summary["polarity"] == "dark" and summary["polarity_origin"] == "auto" and summary["units"] == "ADU"
    assert 20 <= results.n_spots <= 150, results.n_spots  # the visible particles, not the texture
    assert not summary["warnings"], summary["warnings"]
    assert np.all(results.drift_method[1:] == 1)  # from the spots
    signal = SignalModel.from_dict(results.analysis["signal"])
    motions = [_particle_motion(frames, signal, xy) for xy in ((295.9, 257.5), (395.4, 235.4), (417.0, 254.0))]
    independent = np.median(motions, axis=0)
    assert np.abs(results.drift_xy - independent).max() <= 0.3, (results.drift_xy, independent)
    assert np.isfinite(results.drift_rotation).all() and np.abs(results.drift_rotation).max() < math.radians(0.1)
