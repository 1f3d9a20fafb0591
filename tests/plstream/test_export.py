"""``plstream export aligned`` and ``plstream export validation``: a simulated rotating movie and the real frames."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from plstream.acquire_adapters import SimulationParams, open_movie, write_movie
from plstream.analysis import load_results
from plstream.analysis.session import AnalysisSession
from plstream.cli import main
from plstream.commands.export import EXPORTS
from plstream.config import load_settings
from plstream.stream.messages import EndMessage, FrameMessage, StartMessage


def _analyze(movie, out, overrides=()):
    session = AnalysisSession(load_settings(overrides=list(overrides)), out, warm_up=False)
    with open_movie(movie) as source:
        description = source.describe()
        session.handle(
            StartMessage(
                run_uid="r",
                source=description,
                shape=tuple(description["shape"]),
                dtype=description["dtype"],
                timestamp=0.0,
            )
        )
        n = 0
        for frame in source:
            session.handle(FrameMessage(run_uid="r", seq=frame.seq, timestamp=0.0, data=frame.data, metadata={}))
            n += 1
    session.handle(EndMessage(run_uid="r", n_frames=n, reason="complete", message="", counters={}, timestamp=0.0))
    session.close("complete")
    return load_results(out)


@pytest.fixture(scope="module")
def rotating_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rotating")
    movie = folder / "rot.tif"
    params = SimulationParams(
        shape=(96, 96),
        n_frames=40,
        n_emitters=10,
        drift_max_px=3.0,
        rotation_max_deg=2.0,
        bleach_on_frames=1e9,
        on_exponent=1.2,
        off_exponent=2.5,
    )
    write_movie(movie, params, seed=11)
    results = _analyze(movie, folder / "rot.h5")
    return movie, folder / "rot.h5", results


def test_the_parser_offers_every_registered_kind(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert all(kind in text for kind in EXPORTS)


def test_aligned_stack_keeps_the_pixel_type_and_logs_every_frame(rotating_run, tmp_path, capsys):
    movie, result, results = rotating_run
    out = tmp_path / "aligned.tif"
    assert main(["export", "aligned", str(result), "--movie", str(movie), "--out", str(out)]) == 0
    aligned = tifffile.imread(out)
    original = tifffile.imread(movie)
    assert aligned.shape == original.shape and aligned.dtype == np.uint16
    with open(tmp_path / "aligned.alignment_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and rows[0]["method"] == "reference"
    assert float(rows[-1]["rotation_rad"]) == pytest.approx(results.drift_rotation[-1], abs=1e-6)
    assert main(["export", "aligned", str(result), "--movie", str(movie), "--out", str(out)]) == 1  # no overwrite
    assert "already exists" in capsys.readouterr().err


def test_validation_shows_what_the_correction_left(rotating_run, tmp_path, capsys):
    movie, result, _ = rotating_run
    folder = tmp_path / "validation"
    assert main(["export", "validation", str(result), "--movie", str(movie), "--out", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "residual motion after alignment" in printed
    with open(folder / "validation_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    overall = rows[-1]
    assert overall["spot"] == "all" and float(overall["max_after_px"]) < 0.3 and float(overall["reduction_pct"]) > 80
    assert (folder / "summary.png").stat().st_size > 10_000
    assert len(list(folder.glob("particle_*.png"))) == len(rows) - 1


def test_real_frames_aligned_as_a_folder_and_validated_with_the_pipelines_particle(tmp_path, bright_field_dir):
    selections = bright_field_dir / "particle_selections.json"
    results = _analyze(bright_field_dir, tmp_path / "r.h5", [f"drift.reference_spots={selections}"])
    assert results.analysis["drift_references"]["boxes"] == [[289.0, 248.0, 303.0, 264.0]]
    assert main(["export", "aligned", str(tmp_path / "r.h5"), "--out", str(tmp_path / "aligned")]) == 0
    names = sorted(p.name for p in (tmp_path / "aligned").glob("*.tif"))
    assert names == ["1.tif", "2.tif", "3.tif", "4.tif", "5.tif"]
    assert tifffile.imread(tmp_path / "aligned" / "3.tif").dtype == np.uint16
    assert main(["export", "validation", str(tmp_path / "r.h5"), "--out", str(tmp_path / "v")]) == 0
    with open(tmp_path / "v" / "validation_summary.csv", newline="") as f:
        spot = next(csv.DictReader(f))
    assert spot["spot"] == "0" and float(spot["max_before_px"]) > 7 and float(spot["max_after_px"]) < 0.1
