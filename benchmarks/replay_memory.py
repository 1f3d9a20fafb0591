"""Peak memory of ``plstream replay`` on a large TIFF stack, against the file size.

Writes a simulated 512x512 uint16 movie of the requested size (default 2 GiB,
4096 frames) unless it exists, runs ``plstream replay`` on it, and samples the
resident memory of the replay process tree (analyzer + source process) from
/proc every 0.2 s. Anonymous memory (heap, arrays) and file-backed memory
(mapped files and shared libraries, which the kernel can drop at any time) are
reported separately. Run by hand (Linux)::

    .venv/bin/python benchmarks/replay_memory.py [--gib 2] [--folder /tmp/plstream-bench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from plstream.acquire_adapters import SimulationParams, write_movie


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids and int(p) not in pids:
                pids.append(int(p))
    return pids


def _rss_kib(pid: int) -> tuple[int, int]:
    anon = file = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith(("RssFile:", "RssShmem:")):
                file += int(line.split()[1])
    except OSError:
        pass
    return anon, file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="movie size in GiB")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/plstream-bench"))
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    n_frames = int(args.gib * 2**30 / (512 * 512 * 2))
    movie = args.folder / f"big_{n_frames}.tif"
    if not movie.exists():
        print(f"writing {movie} ({n_frames} frames of 512x512 uint16)...", flush=True)
        write_movie(movie, SimulationParams(shape=(512, 512), n_frames=n_frames, n_emitters=300), seed=1)
    size_gib = movie.stat().st_size / 2**30
    out = args.folder / "big_result.h5"
    cmd = [sys.executable, "-m", "plstream", "replay", str(movie), "--out", str(out), "--overwrite"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_anon = peak_total = 0
    while proc.poll() is None:
        anon = file = 0
        for pid in _tree(proc.pid):
            a, f = _rss_kib(pid)
            anon, file = anon + a, file + f
        peak_anon, peak_total = max(peak_anon, anon), max(peak_total, anon + file)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    stdout = proc.stdout.read() if proc.stdout else ""
    print(stdout.strip())
    print(f"\nmovie: {size_gib:.2f} GiB, {n_frames} frames 512x512 uint16, 300 emitters")
    print(f"replay wall time: {elapsed:.1f} s ({n_frames / elapsed:.0f} frames/s incl. start-up)")
    print(f"peak anonymous RSS, analyzer + source processes: {peak_anon / 2**20:.3f} GiB")
    print(f"peak RSS incl. file-backed pages (mapped files and libraries, reclaimable): {peak_total / 2**20:.3f} GiB")
    print(f"peak anonymous RSS / file size: {peak_anon / 2**20 / size_gib:.1%}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
