"""A disk that fills up under a replay: a clean error within 5 s, no crash, every committed row readable.

Each trial replays a simulated movie into a result file on a disk that is
too small for it: a tmpfs of a few MB mounted for the trial (when run as root
with ``mount`` available), else a file-size limit (``RLIMIT_FSIZE``; writes
past it fail with EFBIG, as they fail with ENOSPC on a full disk). It checks
that ``plstream replay`` exits with status 1 (not a crash) within 5 s of the
file's last write, says so in exactly one ``plstream: error:`` line naming
the file, dataset and frame, that the file still opens (``swmr=True``) with
its committed rows, and that ``plstream recover --out`` (to a disk with room)
makes a plain copy holding exactly those rows. Run by hand::

    .venv/bin/python benchmarks/full_disk.py [--trials 5] [--rlimit]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from _common import cached_movie, format_table, machine_description, simulation_params

from plstream.analysis.result_file import load_results

ENV = dict(os.environ, PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
SIZES_MB = (4.0, 5.0, 6.0, 7.0, 8.0)


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def small_disk(size_mb: float, use_tmpfs: bool) -> Iterator[tuple[Path, int | None]]:
    """A folder on a disk of ``size_mb`` (tmpfs), or a plain folder and the file-size limit to apply."""
    with tempfile.TemporaryDirectory(prefix="full-disk-") as folder:
        if not use_tmpfs:
            yield Path(folder), int(size_mb * 2**20)
            return
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * 1024)}k", "tmpfs", folder], check=True)
        try:
            yield Path(folder), None
        finally:
            subprocess.run(["umount", folder], check=True)


def trial(movie: Path, size_mb: float, use_tmpfs: bool, copy_to: Path) -> list[object]:
    with small_disk(size_mb, use_tmpfs) as (folder, limit):
        out = folder / "full.h5"

        def limit_file_size() -> None:
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(out), "--headless", "--live", ""],
            capture_output=True,
            text=True,
            env=ENV,
            preexec_fn=limit_file_size,
            timeout=600,
        )
        ended = time.time()
        errors = [line for line in proc.stderr.splitlines() if line.startswith("plstream: error:")]
        where = re.search(r"failed at (\S+), frame (\d+) \((\w+)\): \[Errno (\d+)\]", errors[0]) if errors else None
        after_last_write = ended - out.stat().st_mtime if out.exists() else None
        try:
            before = load_results(out)
            readable, frames = True, before.n_frames
        except (OSError, ValueError) as exc:
            readable, frames = False, 0
            print(f"not readable: {exc}", file=sys.stderr)
        copy = copy_to / f"copy-{size_mb}.h5"
        copy.unlink(missing_ok=True)
        recovered = subprocess.run(
            [sys.executable, "-m", "plstream", "recover", str(out), "--out", str(copy)], capture_output=True, env=ENV
        )
        same = False
        if recovered.returncode == 0 and readable and copy.exists():  # no copy: the run ended before the disk did
            with h5py.File(copy, "r") as f:
                rows = f["/frames/seq"].shape[0]
                same = rows == frames and np.array_equal(f["/traces/intensity"][:], before.intensity, equal_nan=True)
        print(f"{size_mb} MB: exit {proc.returncode}; {errors[:1]}", file=sys.stderr, flush=True)
        return [
            f"{'tmpfs' if use_tmpfs else 'RLIMIT_FSIZE'} {size_mb:g} MB",
            proc.returncode,
            f"{ended - started:.1f}",
            f"{after_last_write:.2f}" if after_last_write is not None else "-",
            len(errors),
            f"{where.group(1)} @ {where.group(2)} ({where.group(3)})" if where else "-",
            f"errno {where.group(4)}" if where else "-",
            f"{frames}" if readable else "NO",
            "yes" if same else "NO",
        ]


def main(argv: list[str] | None = None) -> int:
    """Run the trials, print one table; exit status 1 if any trial failed a check."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help=f"trials, on disks of {', '.join(map(str, SIZES_MB))} MB")
    parser.add_argument("--rlimit", action="store_true", help="use RLIMIT_FSIZE even where a tmpfs could be mounted")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "plstream-bench")
    args = parser.parse_args(argv)
    use_tmpfs = can_mount() and not args.rlimit
    movie = cached_movie(args.folder, simulation_params(128, 3000, 20))
    rows = []
    with tempfile.TemporaryDirectory(prefix="full-disk-copies-") as copies:
        for i in range(args.trials):
            rows.append(trial(movie, SIZES_MB[i % len(SIZES_MB)], use_tmpfs, Path(copies)))
    headers = [
        "disk",
        "exit status",
        "run s",
        "s after last write",
        "error lines",
        "failed at (dataset @ frame)",
        "why",
        "committed rows readable",
        "recovered copy = committed",
    ]
    notes = [f"machine: {machine_description()}", f"movie: {movie.name} (128x128, 3000 frames, 20 emitters)"]
    print(format_table(headers, rows, title="replay onto a disk that fills up", notes=notes))
    ok = all(r[1] == 1 and r[4] == 1 and r[7] != "NO" and r[8] == "yes" and float(str(r[3])) < 5 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
