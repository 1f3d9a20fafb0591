"""The result file when things go wrong: a disk that fills up, a second writer, recovery after a crash."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_result_file import assert_frames_match, write_run  # pytest puts this folder on sys.path

from plstream.analysis.result_file import ResultFileLocked, ResultWriter, load_results
from plstream.analysis.result_file.lock import ResultLock, lock_owner, lock_path
from plstream.analysis.result_file.recover import recover_result_file
from plstream.analysis.result_file.writer import check_destination

needs_rlimit = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ"
)

# A writer in a child process whose files may not grow past LIMIT bytes (as on a full disk): it appends
# frames until the writer fails, then closes, and prints what happened as JSON.
_FILL_UNTIL_FULL = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    sys.path.insert(0, sys.argv[1])
    from test_result_file import make_record, spot_table, n_spots_at
    from plstream.analysis.result_file import ResultWriteError, ResultWriter
    import numpy as np

    path, limit = sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    writer = ResultWriter(path, run_info={}, flush_interval_s=0.02, frame_shape=(64, 64))
    out = {}
    try:
        for t in range(1_000_000):
            writer.append(make_record(t))
            if t % 10 == 0:
                writer.set_spots(*spot_table(n_spots_at(t)))
                writer.set_mean_image(np.full((64, 64), t, np.float32))
            if t % 20 == 0:
                time.sleep(0.005)
    except ResultWriteError as exc:
        out = {"where": "append", "message": str(exc), "errno": exc.errno, "dataset": exc.dataset, "frame": exc.frame}
    failed_at = time.monotonic()
    try:
        writer.close("complete", {})
    except ResultWriteError as exc:
        out = {"where": "close", "message": str(exc), "errno": exc.errno, "dataset": exc.dataset, "frame": exc.frame}
    out["committed"] = writer.frames_committed
    out["close_s"] = time.monotonic() - failed_at
    print(json.dumps(out), flush=True)
    """
)


@needs_rlimit
@pytest.mark.parametrize("limit_bytes", [400_000, 1_500_000, 3_000_000])
def test_a_full_disk_stops_the_writer_cleanly_and_keeps_every_committed_row(tmp_path, limit_bytes):
    """EFBIG past RLIMIT_FSIZE, as ENOSPC on a full disk: before, a segfault at exit and an unreadable file."""
    path = tmp_path / "full.h5"
    proc = subprocess.run(
        [sys.executable, "-c", _FILL_UNTIL_FULL, str(Path(__file__).parent), str(path), str(limit_bytes)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"the writer process died (status {proc.returncode}): {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errno"] == errno.EFBIG, out
    assert str(path) in out["message"] and out["dataset"].startswith("/") and out["dataset"] in out["message"]
    assert f"frame {out['frame']}" in out["message"] and "file-size limit" in out["message"]
    assert out["close_s"] < 5.0
    committed = out["committed"]
    assert committed > 0 or limit_bytes < 1_000_000  # the smallest limit fails at the first flush
    assert os.path.getsize(path) <= limit_bytes
    assert not lock_path(path).exists()

    results = load_results(path)  # the file is as the last commit left it: a valid SWMR file
    assert results.status == "running" and results.n_frames == committed
    assert_frames_match(results)
    recovery = recover_result_file(path)
    assert recovery.recovered and recovery.frames == committed
    with h5py.File(path, "r") as f:  # any HDF5 program opens the recovered copy
        assert f.attrs["status"] == "crashed"
        assert f["/frames/seq"].shape == (committed,)
    assert_frames_match(load_results(path))


# ---------------------------------------------------------------------- one writer per file
def test_a_second_writer_is_refused_even_with_overwrite(tmp_path):
    path = tmp_path / "run.h5"
    first = ResultWriter(path, run_info={}, flush_interval_s=0.02)
    write_run(first, range(30))
    with pytest.raises(ResultFileLocked, match=rf"run.h5 is being written by process {os.getpid()} .*run.h5.lock"):
        ResultWriter(path, run_info={}, overwrite=True)
    with pytest.raises(ResultFileLocked, match="--overwrite does not override this"):
        check_destination(path, overwrite=True)
    write_run(first, range(30, 60))
    first.close("complete", {})
    results = load_results(path)
    assert results.status == "complete" and results.n_frames == 60  # the first writer's file, whole
    assert_frames_match(results)
    assert not lock_path(path).exists()
    with ResultWriter(path, run_info={}, overwrite=True) as second:  # free now
        write_run(second, range(5))
    assert load_results(path).n_frames == 5


_HOLD_THE_FILE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from test_result_file import make_record
    from plstream.analysis.result_file import ResultWriter

    writer = ResultWriter(sys.argv[2], run_info={}, flush_interval_s=0.02)
    for t in range(20):
        writer.append(make_record(t))
    print("writing", flush=True)
    time.sleep(600)
    """
)


def test_a_writer_in_another_process_is_refused_and_its_stale_lock_taken_over(tmp_path):
    path = tmp_path / "run.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_FILE, str(Path(__file__).parent), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n"
        owner = lock_owner(path)
        assert owner is not None and owner["pid"] == proc.pid
        with pytest.raises(ResultFileLocked, match=rf"process {proc.pid} .*wait for it to finish or stop it"):
            ResultWriter(path, run_info={}, overwrite=True)
        with pytest.raises(ResultFileLocked, match=f"process {proc.pid}"):
            recover_result_file(path)  # a live file is never recovered under its writer's feet
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert lock_path(path).exists() and lock_owner(path) is None  # left behind, but stale
    with ResultWriter(path, run_info={}, overwrite=True) as writer:
        write_run(writer, range(3))
    assert load_results(path).n_frames == 3 and not lock_path(path).exists()


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    path = tmp_path / "run.h5"
    with ResultLock(path):
        owner = json.loads(lock_path(path).read_text())
        assert owner["pid"] == os.getpid() and owner["purpose"] == "writing"
        with pytest.raises(ResultFileLocked):
            ResultLock(path).acquire()
    assert lock_owner(path) is None and not lock_path(path).exists()


# ---------------------------------------------------------------------- plstream recover
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from test_result_file import make_record, spot_table, n_spots_at
    from plstream.analysis.result_file import ResultWriter

    writer = ResultWriter(sys.argv[2], run_info={"settings_json": "{}"}, flush_interval_s=0.02,
                          on_flush=lambda n: print(f"committed {n}", flush=True), frame_shape=(32, 32))
    table_every = int(sys.argv[3])
    for t in range(100_000):
        writer.append(make_record(t))
        if t % table_every == 0:
            writer.set_spots(*spot_table(n_spots_at(t)))
        time.sleep(0.001)
    """
)


def _killed_mid_run(path: Path, *, table_every: int = 10) -> int:
    """Run a writer until it committed frames, kill -9 it; returns the frames it said were committed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(Path(__file__).parent), str(path), str(table_every)],
        stdout=subprocess.PIPE,
        text=True,
    )
    committed = 0
    try:
        while committed < 100:
            line = proc.stdout.readline()
            assert line, "the writer process ended early"
            committed = max(committed, int(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return committed


def test_recover_copies_the_committed_rows_into_a_plain_file(tmp_path):
    path = tmp_path / "killed.h5"
    committed = _killed_mid_run(path)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")  # what a crashed SWMR file does to any other program
    before = load_results(path)
    assert before.n_frames >= committed

    recovery = recover_result_file(path)
    assert recovery.recovered and recovery.original_status == "running" and recovery.status == "crashed"
    assert recovery.frames == before.n_frames and recovery.spots == before.n_spots
    assert "kept" in recovery.describe()
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "crashed" and "recovered_utc" in f.attrs
        facts = json.loads(f.attrs["recovery_json"])
        assert facts["frames"] == before.n_frames and facts["original_status"] == "running"
        assert f["/stream/committed"][()]["writer_closed"] == 1
    after = load_results(path)
    assert not after.opened_swmr and after.status == "crashed"
    assert after.n_frames == before.n_frames and after.n_spots == before.n_spots
    assert_frames_match(after)
    np.testing.assert_array_equal(after.spots_x, before.spots_x)
    np.testing.assert_array_equal(after.mean_image, before.mean_image)
    assert after.settings == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5"]  # no temp file, no lock left

    again = recover_result_file(path)  # idempotent: a closed file is left as it is
    assert not again.recovered and again.status == "crashed"


def test_recover_to_another_file_leaves_the_original(tmp_path):
    path, copy = tmp_path / "killed.h5", tmp_path / "copy.h5"
    _killed_mid_run(path)
    size = path.stat().st_size
    recovery = recover_result_file(path, out=copy)
    assert recovery.path == copy and path.stat().st_size == size
    assert load_results(copy).status == "crashed" and load_results(path).status == "running"
    with pytest.raises(FileExistsError, match="copy.h5 already exists"):
        recover_result_file(path, out=copy)


@needs_rlimit
def test_a_recovery_that_cannot_be_written_leaves_no_half_file(tmp_path):
    """The copy is written under a temporary name and renamed only when complete."""
    path = tmp_path / "killed.h5"
    _killed_mid_run(path)
    original = path.read_bytes()
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from plstream.analysis.result_file import ResultWriteError
        from plstream.analysis.result_file.recover import recover_result_file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        try:
            recover_result_file(sys.argv[1])
        except ResultWriteError as exc:
            print(exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "could not write the recovered copy" in proc.stdout and "File too large" in proc.stdout
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5"]


def test_a_closed_file_needs_no_recovery(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, run_info={}) as writer:
        write_run(writer, range(4))
    recovery = recover_result_file(path)
    assert not recovery.recovered and recovery.status == "complete" and "nothing to recover" in recovery.describe()


def test_recover_cli_reports_one_line(tmp_path):
    path = tmp_path / "killed.h5"
    _killed_mid_run(path)
    run = [sys.executable, "-m", "plstream", "recover", str(path)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plstream: ") and "recovered" in proc.stdout and "crashed" in proc.stdout
    proc = subprocess.run(run[:-1] + [str(tmp_path / "none.h5")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("plstream: error: no result file at"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_recovery_keeps_spots_found_after_the_last_spot_table(tmp_path):
    """Spots the writer knew only from the rows (no spot table yet) are kept, with NaN positions."""
    path = tmp_path / "killed.h5"
    _killed_mid_run(path, table_every=10**9)  # one spot table, at frame 0: 4 spots
    recovery = recover_result_file(path)
    results = load_results(path)
    assert results.n_spots == recovery.spots > 4
    assert np.isfinite(results.spots_x[:4]).all() and np.isnan(results.spots_x[4:]).all()
    assert_frames_match(results)
