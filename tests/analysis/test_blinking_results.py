"""The refined blinking states and statistics in the result file: rewritten runs, tables, ensemble attributes."""

from __future__ import annotations

import h5py
import numpy as np

from plstream.analysis.result_file import FrameRecord, ResultFollower, ResultWriter, layout, load_results


def _record(t: int, n: int) -> FrameRecord:
    f = np.full(n, float(t))
    return FrameRecord(
        index=t,
        seq=t,
        timestamp=0.01 * t,
        drift_xy=np.zeros(2),
        intensity=f,
        background=f,
        weighted=f,
        fit_x=f,
        fit_y=f,
        fit_amplitude=f,
        fit_sigma=f,
        fit_background=f,
        fit_uncertainty=f,
        fit_success=np.ones(n, np.int8),
        state=np.ones(n, np.int8),
        segmented=np.full(n, 1, np.int8) if t % 2 else None,
    )


def test_runs_rewrite_provisional_states_and_tables_are_stored(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.01)
    for t in range(10):
        writer.append(_record(t, 3))
    writer.set_spots(np.zeros(3), np.zeros(3), np.zeros(3, np.int64))
    # final states: spot 1 OFF on frames 2..5, GRAY on 6..7; a run past the last frame waits for it
    writer.set_blinking(
        runs=np.array([[1, 2, 4, 0], [1, 6, 2, 2], [0, 9, 3, 0]]),
        levels=np.ones((3, 3)),
        final_frames=np.array([0, 8, 0]),
    )
    for t in range(10, 12):
        writer.append(_record(t, 3))
    stats = np.arange(3 * 21, dtype=float).reshape(3, 21)
    writer.set_blinking(spot_stats=stats)
    writer.set_ensemble({"alpha_on": 1.6, "model": "on:power_law"})
    writer.close("complete", {})
    r = load_results(path)
    assert list(r.segmented[:, 1]) == [-1, 1, 0, 0, 0, 0, 2, 2, -1, 1, -1, 1]
    assert list(r.segmented[9:12, 0]) == [0, 0, 0]
    assert r.levels.shape == (3, 3) and np.all(r.levels == 1)
    assert list(r.final_frames) == [0, 8, 0]
    assert np.array_equal(r.spot_stats, stats)
    assert r.ensemble == {"alpha_on": 1.6, "model": "on:power_law"}
    with h5py.File(path, "r") as f:
        assert f["/blinking/spot_stats"].attrs["columns"] == ",".join(layout.SPOT_STATS_COLUMNS)
        assert f["/blinking/levels"].attrs["columns"] == "off,on,gray"


def test_a_growing_file_reads_with_its_blinking_tables(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.01)
    try:
        for t in range(5):
            writer.append(_record(t, 2))
        writer.set_blinking(levels=np.full((2, 3), 7.0), final_frames=np.array([3, 3]))
        while writer.frames_committed < 5:
            writer.append(_record(writer.frames_appended, 2))
        with ResultFollower(path) as live:
            live.refresh()
            r = live.read()
            assert r.n_spots == 2 and r.segmented.shape == (r.n_frames, 2)
            assert r.spot_stats.shape == (2, 21) and np.all(np.isnan(r.spot_stats))
            assert r.ensemble == {}
        partial = load_results(path)
        assert partial.status == "running" and partial.levels.shape == (2, 3)
    finally:
        writer.close("complete", {})
