"""Accuracy of the whole pipeline on the acceptance movie, against ground truth.

Simulates the foundation issue's movie (256x256 px, 1000 frames, 60 blinking
emitters, ~2000 photons per on-frame, background ~20 photons/px, PSF sigma
1.3 px, drift up to 3 px), replays it through ``plstream replay`` (source and
analyzer in separate processes over ZeroMQ), and prints every metric next to
its acceptance bar. Run by hand::

    .venv/bin/python benchmarks/accuracy.py [--frames 1000] [--seed 0] [--keep DIR]

Exit status 1 if a bar is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from plstream.acquire_adapters import SimulationParams, load_truth, write_movie
from plstream.analysis.evaluation import evaluate
from plstream.analysis.result_file import load_results
from plstream.cli import main as plstream_main


def run(frames: int, seed: int, folder: Path) -> int:
    params = SimulationParams(shape=(256, 256), n_frames=frames, n_emitters=60)
    movie = folder / f"acceptance_seed{seed}.tif"
    result = folder / f"acceptance_seed{seed}.h5"
    started = time.monotonic()
    truth_path = write_movie(movie, params, seed=seed)
    print(f"simulated {frames} frames in {time.monotonic() - started:.1f} s -> {movie}")
    started = time.monotonic()
    status = plstream_main(["replay", str(movie), "--out", str(result), "--overwrite"])
    elapsed = time.monotonic() - started
    if status != 0:
        print(f"plstream replay failed with exit status {status}")
        return 1
    evaluation = evaluate(load_results(result), load_truth(truth_path))
    print(f"\nplstream replay, wall time {elapsed:.1f} s (including kernel start-up)")
    print(f"movie: 256x256 px, {frames} frames, 60 emitters, seed {seed}")
    print(evaluation.table())
    failures = evaluation.failures()
    print("\nall acceptance bars met" if not failures else "\nMISSED: " + "; ".join(failures))
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    """Simulate, replay, print the metrics; returns 1 if a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000, help="frames to simulate (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--keep", type=Path, help="folder to keep the movie and results in")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args.frames, args.seed, args.keep)
    with tempfile.TemporaryDirectory() as folder:
        return run(args.frames, args.seed, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
