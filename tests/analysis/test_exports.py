"""Every export on a finished result and on one still being written; the CSV round-trips to the HDF5 values."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from plstream.acquire_adapters import TiffStackSource
from plstream.analysis import exports
from plstream.analysis.exports.traces import COLUMNS
from plstream.analysis.result_file import load_results
from plstream.analysis.session import AnalysisSession
from plstream.config import load_settings
from plstream.stream.messages import EndMessage, FrameMessage, StartMessage

pytestmark = pytest.mark.timeout(240)

PNG = b"\x89PNG\r\n\x1a\n"


def _messages(path, stop=None):
    with TiffStackSource(path) as source:
        d = source.describe()
        yield StartMessage(run_uid="r1", source=d, shape=tuple(d["shape"]), dtype=d["dtype"], timestamp=0.0)
        n = 0
        for frame in source:
            if stop is not None and n >= stop:
                return
            yield FrameMessage(run_uid="r1", seq=frame.seq, timestamp=frame.timestamp, data=frame.data, metadata={})
            n += 1
        yield EndMessage(run_uid="r1", n_frames=n, reason="complete", message="", counters={}, timestamp=0.0)


def _session(path, out, **overrides):
    settings = load_settings(overrides=[f"{k}={v}" for k, v in overrides.items()])
    return AnalysisSession(settings, out, warm_up=False)


@pytest.fixture(scope="module")
def finished(small_movie, tmp_path_factory):
    movie = small_movie[0]
    out = tmp_path_factory.mktemp("exports") / "done.h5"
    session = _session(movie, out)
    for message in _messages(movie):
        session.handle(message)
    session.close("complete")
    return out, movie


@pytest.fixture(scope="module")
def growing(small_movie, tmp_path_factory):
    """A result whose writer is still live: 200 of 300 frames analyzed, at least 150 committed."""
    movie = small_movie[0]
    out = tmp_path_factory.mktemp("exports") / "live.h5"
    session = _session(movie, out, **{"output.flush_interval_s": 0.05})
    for message in _messages(movie, stop=200):
        session.handle(message)
    writer = session._writer
    deadline = time.monotonic() + 30.0
    while writer.frames_committed < 150 and time.monotonic() < deadline:
        writer.set_gaps([])  # nothing changes; just wait for the writer thread's next flush
        time.sleep(0.02)
    assert writer.frames_committed >= 150, "the writer did not flush within 30 s"
    yield out, movie
    session.close("interrupted")


@pytest.fixture(params=["finished", "growing"])
def result(request):
    return request.getfixturevalue(request.param)


def test_csv_round_trips_to_the_hdf5_values(result, tmp_path):
    path, _ = result
    out = exports.export_csv(path, tmp_path / "t.csv")
    table = pd.read_csv(out)
    assert tuple(table.columns) == COLUMNS
    r = load_results(path)
    # the export read what was committed when it started; a growing file may have more now
    table = table[table.frame <= r.seq[-1]]
    row = {int(s): i for i, s in enumerate(r.seq)}
    t = table.frame.map(row).to_numpy()
    s = table.spot_id.to_numpy()
    for column, values in (
        ("net_signal", r.intensity),
        ("bg_median", r.background),
        ("weighted_signal", r.weighted),
        ("gauss_x", r.fit_x),
        ("gauss_amp", r.fit_amplitude),
        ("loc_uncertainty", r.fit_uncertainty),
        ("gauss_success", r.fit_success),
        ("state", r.state),
    ):
        np.testing.assert_array_equal(table[column].to_numpy(), np.asarray(values)[t, s].astype(np.float64), column)
    np.testing.assert_array_equal(table.drift_x.to_numpy(), r.drift_xy[t, 0])
    np.testing.assert_allclose(table.x.to_numpy(), r.spots_x[s] + r.drift_xy[t, 0])
    assert np.all(t >= r.spots_first_frame[s]), "rows start at each spot's discovery"
    expected = sum(int(np.count_nonzero(np.arange(r.n_frames) >= f)) for f in r.spots_first_frame)
    if r.status == "complete":
        assert len(table) == expected
    frame = exports.load_traces(path)
    assert tuple(frame.columns) == COLUMNS and len(frame) >= len(table)


def test_image_blinking_and_fit_figures(result, tmp_path):
    path, movie = result
    image = exports.export_image(path, tmp_path / "mean.png")
    assert image.read_bytes()[:8] == PNG
    spots = [1] if load_results(path).status == "running" else []  # one spot figure is enough (matplotlib is slow)
    written = exports.export_blinking(path, tmp_path / "blink", spots=spots)
    names = sorted(p.name for p in written)
    assert names == ["blinking_ensemble.png", *(f"blinking_spot_{i}.png" for i in spots), "blinking_summary.csv"]
    summary = pd.read_csv(tmp_path / "blink" / "blinking_summary.csv")
    assert list(summary.spot_id) == list(range(load_results(path).n_spots))
    assert np.all((summary.on_fraction + summary.off_fraction + summary.gray_fraction).dropna().round(9) == 1.0)
    r = load_results(path)
    t, spot = np.argwhere(r.fit_success == 1)[len(np.argwhere(r.fit_success == 1)) // 2]
    fig = exports.export_fit(path, movie, int(spot), int(r.seq[t]), tmp_path)
    assert fig.name == f"gauss_fit_SPOT{spot}_frame{r.seq[t]}.png" and fig.read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*partial*")), "temporary files are renamed or removed"


def test_video_has_every_movie_frame(result, tmp_path):
    path, movie = result
    seen = []
    out = exports.export_video(path, movie, tmp_path / "v.mp4", progress=lambda done, total: seen.append(done))
    capture = cv2.VideoCapture(str(out))
    try:
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 300
        ok, frame = capture.read()
        assert ok and frame.shape == (256, 256, 3)
    finally:
        capture.release()
    assert seen[-1] == 300


def test_blinking_statistics_in_a_finished_file(finished):
    r = load_results(finished[0])
    assert r.status == "complete"
    assert np.all(r.final_frames == r.n_frames)
    measured = r.state >= 0
    assert np.all(r.segmented[measured] >= 0) and np.all(r.segmented[~measured] == -1)
    assert np.mean((r.segmented[measured] == 1) == (r.state[measured] == 1)) > 0.97
    assert {"alpha_on", "alpha_off", "alpha_on_error", "alpha_off_error", "t_min", "model"} <= set(r.ensemble)
    assert np.all(np.isfinite(r.spot_stats[:, 1]))


def test_export_command(finished, tmp_path, capsys):
    from plstream import cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        path, movie = finished
        assert cli.main(["export", "csv", str(path), "--out", str(tmp_path / "c.csv")]) == 0
        assert (tmp_path / "c.csv").stat().st_size > 0
        assert cli.main(["export", "fit", str(path), "--movie", str(movie), "--spot", "999", "--frame", "3"]) == 1
        assert "spot 999 is not in" in capsys.readouterr().err
        assert cli.main(["export", "video", str(path)]) == 1
        assert "--movie" in capsys.readouterr().err
        assert cli.main(["export", "blinking", str(path), "--spots", "none", "--out", str(tmp_path / "b")]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
