"""The result file: round trip, live reading, kill -9, errors, and the documented layout."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from plstream.analysis.result_file import (
    LAYOUT_VERSION,
    FrameRecord,
    ResultFileError,
    ResultFollower,
    Results,
    ResultWriteError,
    ResultWriter,
    layout,
    load_results,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "result_layout.md"
RUN_INFO = {"settings_json": '{"flush": 1}', "source_json": '{"kind": "test"}', "camera_json": "{}", "run_uid": "u1"}
GAP_AT = 50  # frames from here on come 10 seq numbers later: one gap [GAP_AT, GAP_AT + 9]


# ---------------------------------------------------------------------- known values
def n_spots_at(t: int) -> int:
    """S_t for the synthetic run: starts at 4, one more spot every 7 frames, at most 40."""
    return min(4 + t // 7, 40)


def make_record(t: int) -> FrameRecord:
    """Frame t of a synthetic run; every value is a known function of (t, spot)."""
    s = np.arange(n_spots_at(t))
    value = (t + s / 64).astype(np.float32)  # exact in float32 for t < 2**17
    return FrameRecord(
        index=t,
        seq=t + 10 * (t >= GAP_AT),
        timestamp=t * 1e-3,
        drift_xy=np.array([t * 1e-3, -t * 2e-3]),
        intensity=value,
        background=value + 1,
        weighted=value + 2,
        fit_x=t * 1.5 + s * 1e-3,
        fit_y=t * 2.5 - s * 1e-3,
        fit_amplitude=value + 3,
        fit_sigma=value + 4,
        fit_background=value + 5,
        fit_uncertainty=value + 6,
        fit_success=((t * s) % 3 != 0),
        state=((t + s) % 2).astype(np.int8),
    )


def first_frame_of(spot: np.ndarray) -> np.ndarray:
    """The frame where each spot first appears in the synthetic run."""
    return np.where(spot < 4, 0, (spot - 3) * 7)


def spot_table(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.arange(n)
    return 10.0 + s, 20.0 + s, first_frame_of(s)


def assert_frames_match(results: Results) -> None:
    """Every frame in ``results`` equals what make_record wrote; fill values before discovery."""
    t_n, s_n = results.n_frames, results.n_spots
    t = np.arange(results.first_frame, results.first_frame + t_n)[:, None]
    s = np.arange(s_n)[None, :]
    known = s < np.minimum(4 + t // 7, 40)
    value = (t + s / 64).astype(np.float32)
    nan = np.float32(np.nan)
    np.testing.assert_array_equal(results.intensity, np.where(known, value, nan))
    np.testing.assert_array_equal(results.background, np.where(known, value + 1, nan))
    np.testing.assert_array_equal(results.weighted, np.where(known, value + 2, nan))
    np.testing.assert_array_equal(results.fit_x, np.where(known, t * 1.5 + s * 1e-3, np.nan))
    np.testing.assert_array_equal(results.fit_y, np.where(known, t * 2.5 - s * 1e-3, np.nan))
    for offset, name in enumerate(["fit_amplitude", "fit_sigma", "fit_background", "fit_uncertainty"], start=3):
        np.testing.assert_array_equal(getattr(results, name), np.where(known, value + offset, nan), err_msg=name)
    np.testing.assert_array_equal(results.fit_success, np.where(known, (t * s) % 3 != 0, 0))
    np.testing.assert_array_equal(results.state, np.where(known, (t + s) % 2, -1))
    tt = t[:, 0]
    np.testing.assert_array_equal(results.seq, tt + 10 * (tt >= GAP_AT))
    np.testing.assert_array_equal(results.timestamp, tt * 1e-3)
    np.testing.assert_array_equal(results.drift_xy, np.column_stack([tt * 1e-3, -tt * 2e-3]))
    assert results.intensity.dtype == np.float32 and results.fit_x.dtype == np.float64
    assert results.state.dtype == np.int8 and results.fit_success.dtype == np.int8


def assert_spots_match(results: Results) -> None:
    """Spot table entries are the given table or, for spots it did not cover yet, NaN."""
    s = np.arange(results.n_spots)
    np.testing.assert_array_equal(results.spots_first_frame, first_frame_of(s))
    given = np.isfinite(results.spots_x)
    np.testing.assert_array_equal(results.spots_x[given], 10.0 + s[given])
    np.testing.assert_array_equal(results.spots_y[given], 20.0 + s[given])
    assert np.all(np.isnan(results.spots_y[~given]))
    assert np.all(given[: np.count_nonzero(given)]), "the given table covers a prefix of the spots"


def write_run(writer: ResultWriter, frames: range) -> None:
    for t in frames:
        writer.append(make_record(t))
        if t == GAP_AT:
            writer.set_gaps([(GAP_AT, GAP_AT + 9)])


def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---------------------------------------------------------------------- round trip
def test_record_and_results_fields_match_the_layout():
    frame_fields = {s.field for s in layout.FRAME_DATASETS}
    assert {f.name for f in dataclasses.fields(FrameRecord)} == frame_fields | {"index"}
    assert {s.field for s in layout.DATASETS} <= {f.name for f in dataclasses.fields(Results)}


def test_round_trip_with_growing_spots_gaps_and_spot_table_rewrite(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info=RUN_INFO, flush_interval_s=0.02, rows_per_block=16) as writer:
        write_run(writer, range(60))
        writer.set_spots(np.zeros(5), np.zeros(5), np.zeros(5, np.int64))  # a first, rough table
        write_run(writer, range(60, 130))
        writer.set_spots(*spot_table(n_spots_at(129)))  # refined: replaces the first
        writer.set_gaps([(GAP_AT, GAP_AT + 9), (200, 200)])
        write_run(writer, range(130, 150))
    results = load_results(path)

    assert (results.n_frames, results.n_spots) == (150, 25)
    assert_frames_match(results)
    assert_spots_match(results)
    np.testing.assert_array_equal(results.spots_x[:22], 10.0 + np.arange(22))
    assert np.isnan(results.spots_x[22:]).all()  # found after the last set_spots: NaN, first frame inferred
    np.testing.assert_array_equal(results.gaps, [[GAP_AT, GAP_AT + 9], [200, 200]])
    assert results.status == "complete" and results.complete and results.writer_closed
    assert not results.opened_swmr
    assert results.layout_version == LAYOUT_VERSION
    assert results.settings == {"flush": 1} and results.source == {"kind": "test"} and results.camera == {}
    assert results.summary == {}
    attrs = results.attrs
    assert attrs["frames_analyzed"] == 150 and attrs["run_uid"] == "u1" and attrs["status"] == "complete"
    for key in ("created_utc", "closed_utc"):
        assert dt.datetime.fromisoformat(attrs[key].replace("Z", "+00:00")).tzinfo is not None
    with h5py.File(path, "r") as f:  # a finished file opens in any HDF5 reader, without swmr
        assert f["/traces/intensity"].attrs["units"] == "photons"
        assert f["/fits/x"].dtype == np.float64 and f["/fits/x"].attrs["units"] == "px"
        assert f["/traces/intensity"].chunks == (256, 64)


def test_summary_and_status_given_to_close(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=10.0)
    write_run(writer, range(3))
    writer.close("interrupted", {"frames_received": np.int64(3), "gaps": 0})
    writer.close("complete", {})  # idempotent: the first close wins
    results = load_results(path)
    assert results.status == "interrupted" and not results.complete
    assert results.summary == {"frames_received": 3, "gaps": 0}
    assert results.settings == {} and results.n_frames == 3


@pytest.mark.parametrize("n_frames", [0, 1, 2])
def test_edge_length_runs(tmp_path, n_frames):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info={}, flush_interval_s=10.0) as writer:
        write_run(writer, range(n_frames))
    results = load_results(path)
    assert results.status == "complete" and results.n_frames == n_frames
    assert results.intensity.shape == (n_frames, 4 if n_frames else 0)
    assert results.attrs["frames_analyzed"] == n_frames
    assert_frames_match(results)


def test_context_manager_marks_error_and_interrupted(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with ResultWriter(tmp_path / "e.h5", run_info={}) as writer:
            writer.append(make_record(0))
            1 / 0  # noqa: B018
    with pytest.raises(KeyboardInterrupt):
        with ResultWriter(tmp_path / "i.h5", run_info={}):
            raise KeyboardInterrupt
    error = load_results(tmp_path / "e.h5")
    assert error.status == "error" and "ZeroDivisionError" in error.summary["error"] and error.n_frames == 1
    assert load_results(tmp_path / "i.h5").status == "interrupted"


def test_invalid_use_is_refused_with_a_reason(tmp_path):
    writer = ResultWriter(tmp_path / "run.h5", run_info={})
    with pytest.raises(ValueError, match="out of order: expected 0"):
        writer.append(make_record(1))
    bad = dataclasses.replace(make_record(0), state=np.zeros(3, np.int8))
    with pytest.raises(ValueError, match=r"state has shape \(3,\); expected \(4,\)"):
        writer.append(bad)
    write_run(writer, range(8))  # 5 spots by now
    with pytest.raises(ValueError, match="fewer than the 5"):
        writer.append(dataclasses.replace(make_record(8), **{f: getattr(make_record(0), f) for f in _FIELDS}))
    writer.set_spots(*spot_table(5))
    with pytest.raises(ValueError, match="spot table shrank"):
        writer.set_spots(*spot_table(4))
    with pytest.raises(ValueError, match="first_missing_seq <= last_missing_seq"):
        writer.set_gaps([(5, 4)])
    with pytest.raises(ValueError, match="status must be one of"):
        writer.close("done", {})
    writer.close("complete", {})
    with pytest.raises(RuntimeError, match="after close"):
        writer.append(make_record(8))
    with pytest.raises(ValueError, match="may not set 'status'"):
        ResultWriter(tmp_path / "other.h5", run_info={"status": "x"})
    with pytest.raises(ValueError, match="not valid JSON"):
        ResultWriter(tmp_path / "other.h5", run_info={"settings_json": "{"})


_FIELDS = [s.field for s in layout.TRACE_DATASETS]


def test_caller_may_reuse_its_arrays_after_append(tmp_path):
    path = tmp_path / "run.h5"
    record = make_record(0)
    with ResultWriter(path, run_info={}) as writer:
        writer.append(record)
        record.intensity[:] = -1  # the writer copied the values at append
    assert_frames_match(load_results(path))


def test_a_slow_writer_blocks_append_and_loses_nothing(tmp_path):
    class SlowWriter(ResultWriter):
        def _before_io(self, operation, dataset, frame):
            if dataset == "/traces/intensity":
                time.sleep(0.01)

    path = tmp_path / "run.h5"
    with SlowWriter(path, run_info={}, flush_interval_s=0.01, rows_per_block=2, max_buffer_bytes=1) as writer:
        write_run(writer, range(100))
    assert writer._n_blocks <= 4, "the buffer grew past its budget instead of making append wait"
    results = load_results(path)
    assert results.n_frames == 100
    assert_frames_match(results)


# ---------------------------------------------------------------------- live reading
def test_a_swmr_reader_sees_flushed_frames_while_the_writer_is_live(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.02, rows_per_block=8)
    try:
        write_run(writer, range(40))
        wait_for(lambda: writer.frames_committed >= 40, "the first 40 frames to be committed")
        with h5py.File(path, "r", swmr=True, libver="latest") as f:
            committed = f["/stream/committed"][()]
            assert committed["frames"] >= 40 and committed["writer_closed"] == 0
            np.testing.assert_array_equal(f["/frames/seq"][:40], np.arange(40))
        live = load_results(path)
        assert live.status == "running" and live.n_frames >= 40
        assert_frames_match(live)

        follower = ResultFollower(path)
        assert follower.n_frames >= 40 and not follower.finished
        write_run(writer, range(40, 90))
        wait_for(lambda: (follower.refresh(), follower.n_frames)[1] >= 90, "the follower to see 90 frames")
        assert_frames_match(follower.read())
        tail = follower.read(start=85)
        assert tail.first_frame == 85 and tail.n_frames == 5
        assert_frames_match(tail)
        assert follower.last_flush_unix_s > 0

        closer = threading.Thread(target=writer.close, args=("complete", {"n": 90}))
        closer.start()  # the writer finalizes once the follower lets go of the file
        wait_for(lambda: (follower.refresh(), follower.finished)[1], "the follower to see the writer close")
        closer.join(timeout=30)
        assert not closer.is_alive()
        final = follower.read()
        assert final.status == "complete" and final.n_frames == 90
        assert_frames_match(final)
    finally:
        writer.close("error", {})


_HOLDER = """
import sys, h5py
f = h5py.File(sys.argv[1], "r", swmr=True, libver="latest")
print("open", flush=True)
sys.stdin.readline()
"""


def test_close_finishes_even_while_another_process_holds_the_file_open(tmp_path, caplog):
    """A notebook reading the live file with swmr=True must not leave the run looking crashed."""
    path = tmp_path / "held.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.02, finalize_timeout_s=0.2)
    write_run(writer, range(5))
    wait_for(lambda: writer.frames_committed == 5, "5 frames to be committed")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        caplog.set_level(logging.WARNING, logger="plstream.analysis.result_file.writer")
        writer.close("complete", {})
        assert any("without file locking" in r.getMessage() for r in caplog.records)
    finally:
        holder.communicate("\n", timeout=30)
    results = load_results(path)
    assert results.status == "complete" and results.n_frames == 5


# ---------------------------------------------------------------------- kill -9
_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import test_result_file
test_result_file.child_writer(sys.argv[2])
"""


def child_writer(path: str) -> None:
    """Run in a subprocess by the kill -9 test: writes frames until killed, printing each commit."""
    frames_per_spot_table = 25
    writer = ResultWriter(
        path,
        run_info=RUN_INFO,
        flush_interval_s=0.05,
        rows_per_block=32,
        on_flush=lambda n: print(f"committed {n}", flush=True),
    )
    for t in range(20_000):  # about 20 s: far longer than the test waits
        writer.append(make_record(t))
        if t == GAP_AT:
            writer.set_gaps([(GAP_AT, GAP_AT + 9)])
        if t % frames_per_spot_table == 0:
            writer.set_spots(*spot_table(n_spots_at(t)))
        time.sleep(0.001)
    writer.close("complete", {})


def _commits(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^committed (\d+)$", text, flags=re.M)]


@pytest.mark.parametrize("delay_s", [0.0, 0.13, 0.41])
def test_kill_9_keeps_every_committed_frame(tmp_path, delay_s):
    path = tmp_path / "killed.h5"
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, tests_dir, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[int] = []
    try:
        while len([n for n in seen if n > 0]) < 3:  # a few flushes with frames in them
            line = proc.stdout.readline()
            assert line, f"the writer process ended early: {proc.stderr.read()}"
            seen += _commits(line)
        with ResultFollower(path) as follower:  # another process reads the live file
            assert follower.n_frames >= seen[-1] and not follower.finished
            assert_frames_match(follower.read())
        time.sleep(delay_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    seen += _commits(out)

    results = load_results(path)
    assert results.status == "running" and not results.complete and not results.writer_closed
    assert results.opened_swmr
    assert results.n_frames >= seen[-1], "a frame committed before the kill is missing"
    assert results.settings == {"flush": 1}
    assert_frames_match(results)
    assert_spots_match(results)
    assert results.n_spots == n_spots_at(results.n_frames - 1)
    if results.n_frames > GAP_AT:
        np.testing.assert_array_equal(results.gaps, [[GAP_AT, GAP_AT + 9]])


# ---------------------------------------------------------------------- errors
def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "run.h5"
    ResultWriter(path, run_info={}).close("complete", {})
    with pytest.raises(FileExistsError, match=r"run.h5 already exists; choose another --out or pass --overwrite"):
        ResultWriter(path, run_info={})
    with ResultWriter(path, run_info={}, overwrite=True) as writer:
        write_run(writer, range(3))
    assert load_results(path).n_frames == 3


def test_unusable_destination_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder .*missing does not exist"):
        ResultWriter(tmp_path / "missing" / "run.h5", run_info={})
    with pytest.raises(IsADirectoryError, match="is a folder"):
        ResultWriter(tmp_path, run_info={})
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="a_file is a file, not a folder"):
        ResultWriter(tmp_path / "a_file" / "run.h5", run_info={})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_folder_is_named(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError, match="the folder .*locked is not writable; choose another --out"):
            ResultWriter(folder / "run.h5", run_info={})
    finally:
        folder.chmod(0o700)


def test_reading_a_missing_or_foreign_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result file at .*nothing.h5"):
        load_results(tmp_path / "nothing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(ResultFileError, match="junk.h5 is not an HDF5 file"):
        load_results(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ResultFileError, match="foreign.h5 is not a plstream result file"):
        load_results(foreign)


def test_newer_layout_version_is_rejected(tmp_path):
    path = tmp_path / "future.h5"
    ResultWriter(path, run_info={}).close("complete", {})
    with h5py.File(path, "r+") as f:
        f.attrs["layout_version"] = LAYOUT_VERSION + 1
    newer = rf"layout version {LAYOUT_VERSION + 1}.*up to {LAYOUT_VERSION}; upgrade plstream"
    with pytest.raises(ValueError, match=newer):
        load_results(path)
    with pytest.raises(ResultFileError, match="upgrade plstream"):
        ResultFollower(path)


class _FullDisk(ResultWriter):
    """Fails every write of /traces/intensity once armed, like a disk that filled up."""

    armed = False

    def _before_io(self, operation, dataset, frame):
        if self.armed and dataset == "/traces/intensity":
            raise OSError(errno.ENOSPC, "No space left on device")


def test_write_error_is_raised_at_close_and_flushed_frames_stay_readable(tmp_path):
    path = tmp_path / "full.h5"
    writer = _FullDisk(path, run_info={}, flush_interval_s=0.02)
    write_run(writer, range(10))
    wait_for(lambda: writer.frames_committed == 10, "10 frames to be committed")
    write_run(writer, range(10, 20))
    writer.armed = True
    named = r"full.h5 failed at /traces/intensity, frame 10 \(\w+\): \[Errno 28\] No space left on device"
    with pytest.raises(ResultWriteError, match=named) as info:
        writer.close("complete", {"frames": 20})
    assert info.value.errno == errno.ENOSPC and info.value.frame == 10 and info.value.path == path
    assert "the 10 frames committed before it (0-9) stay readable" in str(info.value)
    writer.close("complete", {})  # idempotent, and the error is not raised twice
    # Nothing more was written after the failure: the file is as its last commit left it.
    results = load_results(path)
    assert results.status == "running" and results.n_frames == 10 and results.opened_swmr
    assert_frames_match(results)
    assert not (tmp_path / "full.h5.lock").exists(), "the writer let go of the file"


def test_write_error_is_raised_by_the_next_append(tmp_path):
    path = tmp_path / "full.h5"
    writer = _FullDisk(path, run_info={}, flush_interval_s=0.01, rows_per_block=4)
    writer.armed = True
    with pytest.raises(ResultWriteError, match="full.h5 failed at /traces/intensity"):
        for t in range(10_000):  # bounded: the writer fails within its first flush
            writer.append(make_record(t))
            time.sleep(0.001)
    writer.close("error", {})  # the caller already has the error: close lets go of the file quietly
    results = load_results(path)
    assert results.status == "running" and results.n_frames == 0


def test_slow_flush_is_logged_with_its_duration(tmp_path, caplog):
    class StalledDisk(ResultWriter):
        def _before_io(self, operation, dataset, frame):
            if operation == "flush":
                time.sleep(0.06)

    caplog.set_level(logging.WARNING, logger="plstream.analysis.result_file.writer")
    with StalledDisk(tmp_path / "run.h5", run_info={}, slow_flush_warning_s=0.05) as writer:
        write_run(writer, range(3))
    assert any(re.search(r"flushing .*run.h5 took \d+\.\d s", r.getMessage()) for r in caplog.records)
    assert json.loads(load_results(tmp_path / "run.h5").attrs["writer_json"])["slow_flushes"] >= 1


# ---------------------------------------------------------------------- mean image (added in plstream 0.2)
def mean_image(k: float, shape: tuple[int, int] = (5, 7)) -> np.ndarray:
    """A known (H, W) image: k + row / 8 + column / 64 (exact in float32)."""
    rows, cols = np.indices(shape)
    return (k + rows / 8 + cols / 64).astype(np.float32)


def test_mean_image_round_trip_keeps_the_latest_image(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info=RUN_INFO, flush_interval_s=0.02, rows_per_block=8, frame_shape=(5, 7)) as writer:
        write_run(writer, range(30))
        writer.set_mean_image(mean_image(1.0))
        scratch = mean_image(2.0).astype(np.float64)
        writer.set_mean_image(scratch)  # float64 is stored as float32; the latest image wins
        scratch[:] = -1  # the writer copied it
    results = load_results(path)
    assert results.layout_version == LAYOUT_VERSION == 1
    assert results.mean_image is not None and results.mean_image.dtype == np.float32
    np.testing.assert_array_equal(results.mean_image, mean_image(2.0))
    assert_frames_match(results)
    with h5py.File(path, "r") as f:
        d = f["/images/mean"]
        assert d.shape == (5, 7) and d.attrs["units"] == "photons/px/frame"
        assert f.attrs["layout_version"] == LAYOUT_VERSION


def test_mean_image_is_nan_until_one_is_handed_over(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info={}, frame_shape=(3, 2)) as writer:
        write_run(writer, range(3))
    image = load_results(path).mean_image
    assert image is not None and image.shape == (3, 2) and np.all(np.isnan(image))


def test_a_writer_without_frame_shape_writes_no_image(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info={}) as writer:
        write_run(writer, range(5))
        with pytest.raises(ValueError, match=r"created without frame_shape.*pass frame_shape=\(rows, columns\)"):
            writer.set_mean_image(np.zeros((2, 2)))
    with h5py.File(path, "r") as f:
        assert "/images/mean" not in f and f.attrs["layout_version"] == LAYOUT_VERSION
    results = load_results(path)
    assert results.mean_image is None and results.n_frames == 5
    assert_frames_match(results)


def test_mean_image_invalid_use_is_refused_with_a_reason(tmp_path):
    for bad in [(0, 5), (5,), (4, 6, 1), "ab", 7]:
        with pytest.raises(ValueError, match="frame_shape must be"):
            ResultWriter(tmp_path / "bad.h5", run_info={}, frame_shape=bad)
    assert not (tmp_path / "bad.h5").exists()
    writer = ResultWriter(tmp_path / "run.h5", run_info={}, frame_shape=(4, 6))
    with pytest.raises(ValueError, match=r"shape \(6, 4\); expected the frame shape \(4, 6\)"):
        writer.set_mean_image(np.zeros((6, 4)))
    writer.close("complete", {})
    with pytest.raises(RuntimeError, match=r"set_mean_image\(\) after close"):
        writer.set_mean_image(np.zeros((4, 6)))


def test_a_layout_1_file_still_loads_without_a_mean_image(tmp_path):
    path = tmp_path / "v1.h5"
    with ResultWriter(path, run_info=RUN_INFO) as writer:  # no frame_shape: exactly the layout 1 datasets
        write_run(writer, range(60))
        writer.set_gaps([(GAP_AT, GAP_AT + 9), (70, 71)])
        writer.set_spots(*spot_table(n_spots_at(59)))
    with h5py.File(path, "r+") as f:
        f.attrs["layout_version"] = 1
        assert {s.path for s in layout.REQUIRED_DATASETS} <= set(_paths(f))
    for results in (load_results(path), ResultFollower(path).read()):
        assert results.layout_version == 1 and results.mean_image is None
        assert results.status == "complete" and results.n_frames == 60
        assert_frames_match(results)
        assert_spots_match(results)


def test_an_invalid_old_layout_version_is_named(tmp_path):
    path = tmp_path / "v0.h5"
    ResultWriter(path, run_info={}).close("complete", {})
    with h5py.File(path, "r+") as f:
        f.attrs["layout_version"] = 0
    with pytest.raises(ResultFileError, match="invalid result layout version 0"):
        load_results(path)


def test_a_follower_sees_the_mean_image_after_each_flush(tmp_path):
    path = tmp_path / "run.h5"
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.02, rows_per_block=8, frame_shape=(5, 7))
    try:
        write_run(writer, range(10))
        with ResultFollower(path) as follower:
            wait_for(lambda: (follower.refresh(), follower.n_frames)[1] >= 10, "the follower to see 10 frames")
            before = follower.read().mean_image
            assert before is not None and before.shape == (5, 7) and np.all(np.isnan(before))
            for k, frames in [(1.0, range(10, 20)), (2.0, range(20, 30))]:
                writer.set_mean_image(mean_image(k))
                write_run(writer, frames)  # a commit that counts these frames wrote the image before them
                wait_for(
                    lambda stop=frames.stop: (follower.refresh(), follower.n_frames)[1] >= stop, f"frame {frames.stop}"
                )
                np.testing.assert_array_equal(follower.read(start=frames.start).mean_image, mean_image(k))
            writer.set_mean_image(mean_image(3.0))
            closer = threading.Thread(target=writer.close, args=("complete", {}))
            closer.start()  # the last image is written at close
            wait_for(lambda: (follower.refresh(), follower.finished)[1], "the follower to see the writer close")
            closer.join(timeout=30)
            assert not closer.is_alive()
            final = follower.read()
            assert final.status == "complete" and final.n_frames == 30
            np.testing.assert_array_equal(final.mean_image, mean_image(3.0))
    finally:
        writer.close("error", {})


def _paths(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return found


# ---------------------------------------------------------------------- the documented contract
def _documented(text: str) -> dict[str, list[str]]:
    """Dataset rows of the docs table: path -> [shape, dtype, units, fill]."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `(/[a-z_]+/[a-z_]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split("|")][:4]
    return rows


def test_layout_matches_docs(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info=RUN_INFO, frame_shape=(4, 6)) as writer:
        write_run(writer, range(2))
    created: dict[str, h5py.Dataset] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: created.update({"/" + name: obj}) if isinstance(obj, h5py.Dataset) else None)
        described = {n: [str(d.shape), d.dtype.name, d.attrs["units"], str(d.fillvalue)] for n, d in created.items()}
        root_attrs = set(f.attrs)
    text = DOCS.read_text(encoding="utf-8")
    documented = _documented(text)
    fix = "update the table in docs/result_layout.md (and bump LAYOUT_VERSION if a name or meaning changed)"
    assert set(documented) == set(described), (
        f"documented but not written: {sorted(set(documented) - set(described))}; "
        f"written but not documented: {sorted(set(described) - set(documented))}; {fix}"
    )
    for spec in layout.DATASETS:
        shape, dtype, units, fill = documented[spec.path]
        expected_shape = "(" + ", ".join(spec.axes) + ")"
        expected_fill = "NaN" if isinstance(spec.fill, float) and math.isnan(spec.fill) else str(spec.fill)
        assert [shape, dtype, units, fill] == [expected_shape, spec.dtype.name, spec.units, expected_fill], (
            f"{spec.path}: docs say {[shape, dtype, units, fill]}, code says "
            f"{[expected_shape, spec.dtype.name, spec.units, expected_fill]}; {fix}"
        )
    for name in layout.COMMIT_DTYPE.names:
        assert f"| `{name}` |" in text, f"commit record field {name} is not documented; {fix}"
    undocumented = sorted(a for a in root_attrs - {"run_uid"} if f"| `{a}` |" not in text)
    assert not undocumented, f"root attributes {undocumented} are not documented; {fix}"
    assert f"layout version {LAYOUT_VERSION}" in text.splitlines()[0], f"the title must name version {LAYOUT_VERSION}"


def test_frames_without_spots_before_the_first_spot_is_found(tmp_path):
    """A run whose first frames have no spots (e.g. a dark field) writes them as rows with S_t = 0."""
    path = tmp_path / "run.h5"
    empty = [0, 0, 0]
    with ResultWriter(path, run_info={}, flush_interval_s=0.02) as writer:
        for t in range(6):
            record = make_record(t)
            if t < len(empty):
                none = np.zeros(0)
                record = FrameRecord(
                    index=t,
                    seq=t,
                    timestamp=record.timestamp,
                    drift_xy=record.drift_xy,
                    intensity=none.astype(np.float32),
                    background=none.astype(np.float32),
                    weighted=none.astype(np.float32),
                    fit_x=none,
                    fit_y=none,
                    fit_amplitude=none.astype(np.float32),
                    fit_sigma=none.astype(np.float32),
                    fit_background=none.astype(np.float32),
                    fit_uncertainty=none.astype(np.float32),
                    fit_success=none.astype(bool),
                    state=none.astype(np.int8),
                )
            else:
                record = FrameRecord(**{**record.__dict__, "seq": t})
            writer.append(record)
    results = load_results(path)
    assert results.n_frames == 6 and results.intensity.shape == (6, n_spots_at(5))
    assert np.all(np.isnan(results.intensity[:3])) and np.all(results.state[:3] == -1)
    np.testing.assert_array_equal(
        results.intensity[3:, :4], np.stack([make_record(t).intensity[:4] for t in range(3, 6)])
    )
