"""``plstream simulate`` (a simulated movie and its ground truth) and ``plstream evaluate`` (a result against it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plstream.commands._common import print_evaluation, settings_from, with_simulation_flags
from plstream.errors import EXIT_ERROR, EXIT_OK, UsageError

__all__ = ["evaluate", "simulate"]


def simulate(args: argparse.Namespace) -> int:
    """Write a simulated movie (multi-page TIFF) and its ground truth (``MOVIE.truth.h5``)."""
    from plstream.acquire_adapters import write_movie
    from plstream.source_spec import simulation_params

    sim = with_simulation_flags(settings_from(args), args).simulation
    out = Path(args.out)
    truth = out.with_name(out.stem + ".truth.h5")  # where write_movie puts it
    for path in (out, truth):
        if path.exists() and not args.overwrite:
            raise UsageError(f"{path} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    progress_every = max(1, sim.n_frames // 20)

    def progress(done: int, total: int) -> None:
        if done % progress_every == 0 or done == total:
            print(f"\rplstream: simulated {done}/{total} frames", end="", file=sys.stderr, flush=True)

    truth_path = write_movie(out, simulation_params(sim), seed=sim.seed, progress=progress)
    print(file=sys.stderr)
    print(f"movie: {out.resolve()}\ntruth: {Path(truth_path).resolve()}")
    return EXIT_OK


def evaluate(args: argparse.Namespace) -> int:
    """Score a result file against a simulation's ground truth; ``--check`` fails on a missed bar."""
    for path in (args.result, args.truth):
        if not Path(path).exists():
            raise UsageError(f"{path} not found")
    failures = print_evaluation(Path(args.result), Path(args.truth))
    if failures:
        print("missed acceptance bars: " + "; ".join(failures))
        return EXIT_ERROR if args.check else EXIT_OK
    print("all acceptance bars met")
    return EXIT_OK
