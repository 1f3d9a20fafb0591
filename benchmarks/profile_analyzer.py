"""Where the analyzer's time goes, per function, on a 512x512 movie with 300 emitters.

Renders frames with the simulator (outside the timed part), warms the analyzer
up on 50 frames, then profiles ``StreamingAnalyzer.process`` on the rest with
cProfile and prints frames/s and the functions that take the most time. No
ZeroMQ and no HDF5: this is the analysis alone (``scaling.py`` gives the same
per stage, without a profiler, for several sizes). Run by hand::

    .venv/bin/python benchmarks/profile_analyzer.py [--frames 400] [--size 512] [--emitters 300]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import _common

from plstream.acquire_adapters import SimulatedCamera
from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.config import load_settings

_WARM_UP = 50


def main(argv: list[str] | None = None) -> int:
    """Profile the analyzer and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=400, help="frames, the first 50 not profiled (default 400)")
    parser.add_argument("--size", type=int, default=512, help="frame size, px, square (default 512)")
    parser.add_argument("--emitters", type=int, default=300, help="simulated emitters (default 300)")
    _common.add_common_arguments(parser, seed=False, settings=False)
    args = _common.parse_arguments(parser, argv)
    if args.frames <= _WARM_UP:
        parser.error(f"--frames must be more than the {_WARM_UP} warm-up frames")
    params = _common.simulation_params(args.size, args.frames, args.emitters)
    camera = SimulatedCamera(params, seed=1)
    frames = [camera.render_frame(t) for t in range(args.frames)]
    analyzer = StreamingAnalyzer(load_settings(), params.shape, _common.camera_model_of(camera.describe()))
    for t in range(_WARM_UP):
        analyzer.process(t, 0.0, frames[t])
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for t in range(_WARM_UP, args.frames):
        analyzer.process(t, 0.0, frames[t])
    profile.disable()
    elapsed = time.perf_counter() - started
    n = args.frames - _WARM_UP
    print(
        f"analyzer alone, {args.size}x{args.size}, {args.emitters} emitters, {len(analyzer.spots)} spots: "
        f"{n / elapsed:.0f} frames/s ({elapsed / n * 1e3:.1f} ms/frame, under the profiler)"
    )
    print(f"machine: {_common.machine_description()}")
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
