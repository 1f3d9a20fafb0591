"""How runs end: stop signals, kill -9, a dead analyzer, and what must never be left behind or overwritten.

Each test starts the real command line in a process group of its own and
bounds every wait. ``benchmarks/kill_recover.py`` repeats the kill -9 tests
20 times at random moments.
"""

from __future__ import annotations

import glob
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from plstream.analysis.result_file import load_results

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; POSIX signals")

SMALL_RUN = ["--headless", "--live", "", "--set", "simulation.shape_px=[96, 96]", "--set", "simulation.n_emitters=8"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def plstream(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "plstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,  # a group of its own: the test's signals reach only what it means
        **kwargs,
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def private_folders(pid: int) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"plstream-{pid}-*"))


def wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until the live result file has ``rows`` committed frames (the run is under way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        try:
            with h5py.File(path, "r", swmr=True) as f:
                if f["/stream/committed"][()]["frames"] >= rows:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {rows} committed frames in {timeout_s} s")


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recover_and_check(path: Path) -> int:
    """``plstream recover`` makes the file readable by any HDF5 program; returns its frames."""
    proc = subprocess.run(
        [sys.executable, "-m", "plstream", "recover", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] in ("crashed", "interrupted", "complete")
        return int(f["/frames/seq"].shape[0])


# ---------------------------------------------------------------------- stop signals
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_a_run_within_two_seconds_and_leaves_nothing_behind(tmp_path, name):
    """Before: SIGTERM/SIGHUP left the source process running and the file 'running'."""
    out = tmp_path / "run.h5"
    proc = plstream("run", "--out", str(out), "--frames", "100000", *SMALL_RUN)
    try:
        wait_for_rows(out, 30, proc)
        helpers, folders = descendants(proc.pid), private_folders(proc.pid)
        assert helpers and folders
        sent = time.monotonic()
        proc.send_signal(getattr(signal, name))
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert took < 2.0, f"{name} took {took:.2f} s to end the run"
    assert "Traceback" not in stderr
    assert not [f for f in folders if os.path.exists(f)]
    assert wait_until(lambda: not [p for p in helpers if running(p)], 5.0), "processes outlived the run"
    results = load_results(out)
    assert results.status == "interrupted" and not results.opened_swmr and results.n_frames >= 30
    assert not Path(str(out) + ".lock").exists()


# ---------------------------------------------------------------------- kill -9
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_of_a_run_takes_its_source_process_and_folder_with_it(tmp_path, seed):
    """Before: the source process and its helper ran on for minutes and the IPC folder stayed."""
    out = tmp_path / "run.h5"
    proc = plstream("run", "--out", str(out), "--frames", "100000", "--unpaced", *SMALL_RUN)
    try:
        wait_for_rows(out, 1, proc)
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
        helpers, folders = descendants(proc.pid), private_folders(proc.pid)
        assert helpers and folders
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_until(lambda: not [p for p in helpers if running(p)], 10.0), "orphaned processes remain"
        assert wait_until(lambda: not [f for f in folders if os.path.exists(f)], 5.0), "the IPC folder remains"
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert recover_and_check(out) >= 1


def test_acquire_stops_when_its_analyzer_is_killed(tmp_path):
    """The split set-up: before, 'plstream acquire' blocked forever on a dead analyzer."""
    out, endpoint = tmp_path / "split.h5", f"tcp://127.0.0.1:{free_port()}"
    impatient = ["--set", "stream.peer_timeout_s=2", "--set", "stream.silence_warning_s=1"]
    small = ["--set", "simulation.shape_px=[96, 96]"]
    acquire = plstream(
        "acquire", "simulated", "--bind", endpoint, "--unpaced", "--frames", "1000000", *impatient, *small
    )
    analyze = plstream("analyze", "--connect", endpoint, "--out", str(out), "--live", "", *small)
    try:
        wait_for_rows(out, 1, analyze)
        analyze.send_signal(signal.SIGKILL)
        analyze.communicate(timeout=30)
        killed = time.monotonic()
        _, stderr = acquire.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        for proc in (acquire, analyze):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=30)
    assert acquire.returncode == 1, stderr
    assert took < 2 + 5, f"acquire took {took:.1f} s to notice"
    errors = [line for line in stderr.splitlines() if line.startswith("plstream: error:")]
    assert len(errors) == 1 and "has not answered for" in errors[0] and "peer_timeout_s" in errors[0], stderr
    assert recover_and_check(out) >= 1


# ---------------------------------------------------------------------- ownership of files
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from plstream.analysis.result_file import ResultWriter
    writer = ResultWriter(sys.argv[1], run_info={})
    print("holding", flush=True)
    time.sleep(600)
    """
)


def test_a_second_analysis_cannot_take_a_file_being_written_even_with_overwrite(tmp_path):
    out = tmp_path / "busy.h5"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        proc = subprocess.run(
            [sys.executable, "-m", "plstream", "run", "--out", str(out), "--overwrite", "--frames", "30", *SMALL_RUN],
            capture_output=True,
            text=True,
            timeout=180,
            env=ENV,
        )
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("plstream: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"busy.h5 is being written by process {holder.pid}" in proc.stderr


def test_run_never_overwrites_a_ground_truth_file_silently(tmp_path):
    """Before: 'plstream run --out x.h5' replaced an existing x.truth.h5 without a word."""
    truth = tmp_path / "x.truth.h5"
    truth.write_bytes(b"an earlier run's ground truth")
    args = [sys.executable, "-m", "plstream", "run", "--out", str(tmp_path / "x.h5"), "--frames", "30", "--unpaced"]
    proc = subprocess.run([*args, *SMALL_RUN], capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 1 and "x.truth.h5 already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert truth.read_bytes() == b"an earlier run's ground truth"
    proc = subprocess.run([*args, "--overwrite", *SMALL_RUN], capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert truth.read_bytes() != b"an earlier run's ground truth"
