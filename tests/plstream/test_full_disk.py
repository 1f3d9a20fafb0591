"""A replay whose disk fills up: one error line, a quick non-zero exit, every committed row kept.

The disk is made "full" with RLIMIT_FSIZE (writes past the limit fail with
EFBIG, as they fail with ENOSPC on a full disk); ``benchmarks/full_disk.py``
does the same on a real, tiny tmpfs when it can mount one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from plstream.analysis.result_file import load_results

resource = pytest.importorskip("resource")

LIMIT_BYTES = 1_300_000  # the first 256 frames fit (one row of chunks); the next row of chunks does not


def _disk_full_at(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_ends_the_replay_with_one_error_and_keeps_the_committed_rows(small_movie, tmp_path):
    """Before: a segfault (exit -11) and a file that no longer opened."""
    movie, _, _ = small_movie
    out = tmp_path / "full.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(out), "--headless", "--live", ""]
        + ["--truth", str(movie.with_name(movie.stem + ".truth.h5")), "--set", "output.flush_interval_s=0.1"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_disk_full_at(LIMIT_BYTES),
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    ended = time.time()
    assert proc.returncode == 1, f"exit status {proc.returncode}: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("plstream: error:")]
    assert len(errors) == 1, proc.stderr
    assert f"writing the result file {out} failed at /" in errors[0] and ", frame " in errors[0]
    assert "[Errno 27] File too large" in errors[0] and "plstream recover" in errors[0]
    assert [line for line in proc.stderr.splitlines() if "ERROR" in line] == []  # said once, not twice
    assert ended - out.stat().st_mtime < 5.0, "the process went on for more than 5 s after the last write"
    assert "status: error" in proc.stdout

    before = load_results(out)  # as the last commit left it
    assert before.status == "running" and 0 < before.n_frames < 300
    subprocess.run([sys.executable, "-m", "plstream", "recover", str(out)], check=True, timeout=120)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "crashed"
        np.testing.assert_array_equal(f["/frames/seq"][:], np.arange(before.n_frames))
        np.testing.assert_array_equal(f["/traces/intensity"][:], before.intensity)
