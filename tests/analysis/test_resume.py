"""Resuming an interrupted analysis: the writer appends, the analyzer goes on from the saved state."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from test_result_file import assert_frames_match, make_record, write_run

from plstream.acquire_adapters import TiffStackSource
from plstream.analysis.result_file import ResultFileError, ResultWriter, load_results
from plstream.analysis.result_file.recover import recover_result_file
from plstream.analysis.resume import read_resume_point
from plstream.analysis.session import AnalysisSession
from plstream.config import load_settings
from plstream.stream.messages import EndMessage, FrameMessage, StartMessage


# ---------------------------------------------------------------------- the writer
def test_a_resumed_writer_appends_after_the_saved_rows(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info={"settings_json": '{"a": 1}'}, frame_shape=(8, 8)) as writer:
        write_run(writer, range(100))
        writer.close("interrupted", {"frames": 100})
    with ResultWriter(path, run_info={"run_uid": "second"}, resume=True, flush_interval_s=0.02) as writer:
        assert writer.frames_appended == 100 and writer.frame_shape == (8, 8)
        with pytest.raises(ValueError, match="out of order: expected 100"):
            writer.append(make_record(0))
        write_run(writer, range(100, 180))
    results = load_results(path)
    assert results.status == "complete" and results.n_frames == 180 and not results.opened_swmr
    assert_frames_match(results)
    assert results.settings == {"a": 1}
    np.testing.assert_array_equal(results.gaps, [[50, 59]])
    resumed = json.loads(results.attrs["resumed_json"])
    assert [note["run_uid"] for note in resumed] == ["second"]


def test_a_crashed_file_resumes_after_recovery_and_a_live_one_never(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.02)
    write_run(writer, range(40))
    deadline = time.monotonic() + 20
    while writer.frames_committed < 40:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(OSError, match="being written by process"):
        ResultWriter(path, run_info={}, resume=True)
    writer.close("interrupted", {})
    with ResultWriter(path, run_info={}, resume=True) as again:
        write_run(again, range(40, 60))
    assert load_results(path).n_frames == 60


# ---------------------------------------------------------------------- the analysis
def _messages(path, run_uid="r1", first_seq=0, last_seq=None):
    with TiffStackSource(path) as source:
        description = source.describe()
        yield StartMessage(run_uid, description, tuple(description["shape"]), description["dtype"], 0.0)
        n = 0
        for frame in source:
            if last_seq is not None and frame.seq > last_seq:
                yield EndMessage(run_uid, n, "stopped", "", {}, 0.0)
                return
            n = frame.seq + 1
            if frame.seq >= first_seq:
                yield FrameMessage(run_uid, frame.seq, frame.timestamp, frame.data, frame.metadata)
        yield EndMessage(run_uid, n, "complete", "", {}, 0.0)


def _analyze(session, messages):
    for message in messages:
        if session.handle(message):
            break


@pytest.fixture(scope="module")
def uninterrupted(small_movie, tmp_path_factory):
    movie, _, _ = small_movie
    path = tmp_path_factory.mktemp("whole") / "whole.h5"
    session = AnalysisSession(load_settings(), path, warm_up=False)
    _analyze(session, _messages(movie))
    session.close("complete")
    return load_results(path)


@pytest.mark.parametrize("stop_after", [60, 181])
def test_a_resumed_analysis_matches_an_uninterrupted_one(small_movie, uninterrupted, tmp_path, stop_after):
    movie, _, _ = small_movie
    path = tmp_path / "resumed.h5"
    first = AnalysisSession(load_settings(), path, warm_up=False)
    _analyze(first, _messages(movie, last_seq=stop_after))
    first.close("interrupted", "stopped by the user")
    saved = load_results(path)
    assert saved.n_frames == stop_after + 1

    settings = load_settings(saved_json=json.dumps(saved.settings))
    point = read_resume_point(path, settings)
    assert (point.frames, point.next_seq, point.previous_status) == (stop_after + 1, stop_after + 1, "interrupted")
    second = AnalysisSession(settings, path, warm_up=False, resume=point)
    _analyze(second, _messages(movie, run_uid="r2", first_seq=point.next_seq))
    summary = second.close("complete")
    assert summary["resumed"]["from_frame"] == stop_after + 1 and summary["frames_analyzed"] == 300

    whole, resumed = uninterrupted, load_results(path)
    assert resumed.status == "complete" and resumed.n_frames == whole.n_frames == 300
    np.testing.assert_array_equal(resumed.seq, np.arange(300))  # every frame once, none twice
    assert resumed.gaps.size == 0
    t = point.frames
    known = int(np.count_nonzero(whole.spots_first_frame < t))  # spots found before the resume: the same IDs
    for name in ("intensity", "fit_x", "fit_y", "drift_xy", "state", "fit_success"):
        a, b = getattr(whole, name), getattr(resumed, name)
        if a.ndim == 2 and name != "drift_xy":
            a, b = a[:, :known], b[:, :known]
        np.testing.assert_array_equal(b[:t], a[:t], err_msg=f"{name}: rows before the resume changed")
    # After the resume: what is exact is exact, the rest within the fits' own noise (see analysis/resume.py).
    # Spots found later are searched for in a mean rebuilt from the file, so a late search may find a
    # spot a few frames earlier, or one more: every spot of the uninterrupted run is there, at its place.
    whole_xy = np.c_[whole.spots_x, whole.spots_y]
    resumed_xy = np.c_[resumed.spots_x, resumed.spots_y]
    match = [int(np.argmin(np.hypot(*(resumed_xy - xy).T))) for xy in whole_xy]
    assert match[:known] == list(range(known))
    np.testing.assert_allclose(resumed_xy[match], whole_xy, atol=5e-3)
    assert resumed.n_spots - whole.n_spots <= max(2, whole.n_spots // 10)
    np.testing.assert_array_equal(resumed.state[t:, :known], whole.state[t:, :known])
    np.testing.assert_allclose(resumed.drift_xy[t:], whole.drift_xy[t:], atol=1e-2)  # its precision: ~0.013 px
    np.testing.assert_allclose(resumed.fit_x[t:, :known], whole.fit_x[t:, :known], atol=5e-3, equal_nan=True)
    # photometry at a drift that differs by ~1e-3 px: within a few photons (an OFF aperture's noise is ~25)
    np.testing.assert_allclose(
        resumed.intensity[t:, :known], whole.intensity[t:, :known], rtol=1e-3, atol=5.0, equal_nan=True
    )


def test_what_cannot_be_resumed_is_named(small_movie, uninterrupted, tmp_path):
    settings = load_settings()
    with pytest.raises(ResultFileError, match="is complete; there is nothing to resume"):
        read_resume_point(uninterrupted.path, settings)
    path = tmp_path / "short.h5"
    with ResultWriter(path, run_info={}) as writer:
        for t in range(10):
            writer.append(make_record(t))
        writer.close("interrupted", {})
    with pytest.raises(ResultFileError, match="holds only 10 frames; start it again"):
        read_resume_point(path, settings)


# ---------------------------------------------------------------------- the command line
@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_replay_resume_after_kill_9(small_movie, uninterrupted, tmp_path):
    """kill -9 mid-replay, then 'replay --resume': the crashed file is recovered and completed."""
    movie, _, _ = small_movie
    out = tmp_path / "replay.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    base = [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(out), "--headless", "--live", ""]
    slow = ["--set", "output.flush_interval_s=0.05", "--set", "stream.send_hwm=1"]
    proc = subprocess.Popen([*base, *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the replay ended before it could be killed"
            try:
                with h5py.File(out, "r", swmr=True) as f:
                    if f["/stream/committed"][()]["frames"] >= 24:
                        break
            except (OSError, KeyError):
                pass
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    killed_at = load_results(out).n_frames
    if killed_at >= 300:
        pytest.skip("the replay finished before the kill landed")
    done = subprocess.run([*base, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "recovered" in done.stderr and "resuming" in done.stderr
    results = load_results(out)
    assert results.status == "complete" and not results.opened_swmr
    np.testing.assert_array_equal(results.seq, np.arange(300))
    np.testing.assert_array_equal(results.state[:killed_at], uninterrupted.state[:killed_at])
    assert results.n_spots == uninterrupted.n_spots
    after = slice(killed_at, None)
    ours, theirs = results.state[after], uninterrupted.state[after]
    measured = (ours >= 0) & (theirs >= 0)  # a spot re-detected from the fresh mean starts a little later
    assert np.mean(ours[measured] == theirs[measured]) > 0.99
    np.testing.assert_allclose(
        results.drift_xy[after], uninterrupted.drift_xy[after], atol=1e-2
    )  # the drift's own precision is ~0.013 px
    assert "recovered_utc" in results.attrs and json.loads(results.attrs["resumed_json"])
    again = subprocess.run([*base, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 1 and "nothing to resume" in again.stderr


def test_resume_refuses_another_movie(small_movie, tmp_path):
    movie, _, _ = small_movie
    other = tmp_path / "other.h5"
    with ResultWriter(other, run_info={"source_json": json.dumps({"shape": [64, 64], "n_frames": 5})}) as writer:
        for t in range(30):
            writer.append(dataclasses.replace(make_record(t)))
        writer.close("interrupted", {})
    proc = subprocess.run(
        [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(other), "--resume", "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "resume it with the movie it was made from" in proc.stderr
    assert recover_result_file(other).recovered is False
