"""Peak memory and time of ``plstream export csv`` and ``plstream export video`` on a big result.

Simulates a 512x512 movie of 2000 frames with 300 emitters (1 GiB), replays
it into a result file, then runs each export in a fresh process and prints its
wall time and peak resident memory (the process's own ``ru_maxrss``), with the
progress lines the command prints. The exports read the result in blocks of
256 frames and the movie one frame at a time, so their memory does not grow
with the length of the run. Run by hand::

    .venv/bin/python benchmarks/export_memory.py [--frames 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plstream.acquire_adapters import SimulationParams, write_movie
from plstream.cli import main as plstream_main

_CHILD = """
import resource, sys, time
from plstream.cli import main
started = time.monotonic()
status = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"@@ status {status} wall {time.monotonic() - started:.1f} s peak_rss {peak:.0f} MiB", flush=True)
"""


def _vm_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _run_export(args: list[str]) -> str:
    """Run one export in a fresh process; sample its resident memory every 0.2 s (is it flat?)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=out, stderr=err, text=True)
        started, samples = time.monotonic(), []
        while proc.poll() is None:
            samples.append((time.monotonic() - started, _vm_kib(proc.pid, "VmRSS") / 1024))
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in stderr.splitlines():
        if line.startswith("plstream: export"):
            print("    " + line)
    result = [line for line in stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not result:
        raise SystemExit(f"plstream {' '.join(args)} failed:\n{stdout}\n{stderr}")
    samples = [s for s in samples if s[1] > 0]
    if samples:
        total = samples[-1][0]
        marks = []
        for frac in (0.25, 0.5, 0.75, 1.0):
            near = min(samples, key=lambda s: abs(s[0] - frac * total))
            marks.append(f"{near[1]:.0f}")
        print(f"    resident memory at 25/50/75/100 % of the run: {' / '.join(marks)} MiB")
    return result[-1][3:]


def run(folder: Path, frames: int) -> None:
    params = SimulationParams(shape=(512, 512), n_frames=frames, n_emitters=300)
    movie = folder / f"big_{frames}.tif"
    result = folder / f"big_{frames}.h5"
    if not movie.exists():
        started = time.monotonic()
        write_movie(movie, params, seed=0)
        print(f"simulated {frames} frames of 512x512 px, 300 emitters in {time.monotonic() - started:.0f} s")
    if not result.exists():
        started = time.monotonic()
        status = plstream_main(["replay", str(movie), "--out", str(result), "--overwrite", "--headless"])
        if status != 0:
            raise SystemExit(f"replay failed ({status})")
        print(f"replayed in {time.monotonic() - started:.0f} s -> {result} ({result.stat().st_size / 2**20:.0f} MiB)")
    print(f"\nmovie {movie.stat().st_size / 2**30:.2f} GiB, result {result.stat().st_size / 2**20:.0f} MiB")
    csv = folder / "big.csv"
    print("plstream export csv:")
    print("  " + _run_export(["export", "csv", str(result), "--out", str(csv), "--overwrite"]))
    print(f"  {csv.stat().st_size / 2**20:.0f} MiB of CSV")
    video = folder / "big.mp4"
    print("plstream export video:")
    print(
        "  " + _run_export(["export", "video", str(result), "--movie", str(movie), "--out", str(video), "--overwrite"])
    )
    print(f"  {video.stat().st_size / 2**20:.0f} MiB of MP4")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="folder to keep the movie, result and exports in")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args.frames)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
