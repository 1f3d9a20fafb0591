"""Peak memory of ``plstream replay`` on a large TIFF stack, against the file size.

Writes a simulated 512x512 uint16 movie of the requested size (default 2 GiB,
4096 frames) unless it is cached already, runs ``plstream replay`` on it in a
subprocess, and samples the resident memory of the replay process tree
(analyzer + source process) from /proc every 0.2 s. Anonymous memory (heap,
arrays) and file-backed memory (mapped files and shared libraries, which the
kernel can drop at any time) are reported separately. Run by hand (Linux)::

    .venv/bin/python benchmarks/replay_memory.py [--gib 2] [--folder /tmp/plstream-bench]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common


def main(argv: list[str] | None = None) -> int:
    """Replay the movie, print its peak memory; returns the replay's exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="movie size in GiB (default 2)")
    parser.add_argument(
        "--folder",
        type=Path,
        default=_common.DEFAULT_CACHE,
        help=f"where the movie is cached and the result written (default {_common.DEFAULT_CACHE})",
    )
    _common.add_common_arguments(parser, seed=False, settings=False)
    args = _common.parse_arguments(parser, argv)
    n_frames = max(1, int(args.gib * 2**30 / (512 * 512 * 2)))
    movie = _common.cached_movie(args.folder, _common.simulation_params(512, n_frames, 300), seed=1)
    size_gib = movie.stat().st_size / 2**30
    out = args.folder / "big_result.h5"
    cmd = [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(out), "--overwrite"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_anon = peak_total = 0
    while proc.poll() is None:
        anon = file = 0
        for pid in _common.process_tree(proc.pid):
            a, f = _common.rss_kib(pid)
            anon, file = anon + a, file + f
        peak_anon, peak_total = max(peak_anon, anon), max(peak_total, anon + file)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    stdout = proc.stdout.read() if proc.stdout else ""
    print(stdout.strip())
    print(f"\nmovie: {size_gib:.2f} GiB, {n_frames} frames 512x512 uint16, 300 emitters")
    print(f"machine: {_common.machine_description()}")
    print(f"replay wall time: {elapsed:.1f} s ({n_frames / elapsed:.0f} frames/s incl. start-up)")
    print(f"peak anonymous RSS, analyzer + source processes: {peak_anon / 2**20:.3f} GiB")
    print(f"peak RSS incl. file-backed pages (mapped files and libraries, reclaimable): {peak_total / 2**20:.3f} GiB")
    print(f"peak anonymous RSS / file size: {peak_anon / 2**20 / size_gib:.1%}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
