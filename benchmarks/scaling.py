"""How the analyzer's speed scales with the number of spots and with the frame size.

The analyzer alone, in this process (no ZeroMQ, no HDF5), on simulated
movies from the project's simulator, in two sweeps:

- **spots**: 30, 100, 300, 1000, 3000 emitters in 512 x 512 px frames;
- **frame size**: 256, 512, 1024, 2048 px square at a fixed 300 emitters
  (fixed count, not fixed density, so the per-pixel cost shows on its own:
  the spot-dependent stages cost the same in every row).

Each frame is rendered before it is analyzed (rendering is not timed; the
movie is never held in memory). The first ``--warm-up`` frames (default 50:
frequent detection passes and the PSF-width measurement) are analyzed but not
timed; then ``time.perf_counter`` around :meth:`StreamingAnalyzer.process`
and around its stage functions (``_common.ANALYZER_STAGES``, exclusive times)
gives frames/s and ms per frame per stage. Per-pixel stages (photons+mean,
detection) grow with the frame size, per-spot stages (fit, integration) with
the spots; the table ends with a least-squares cost model
``ms/frame = a + b * Mpx + c * (1000 spots)`` over all rows.

Crowded fields (3000 emitters in 512 x 512) are simulated with a smaller
minimum separation than the default 8 px (column ``sep px``), so the
emitters fit; close neighbours may be found as one spot (column ``found``).
Prints one table. Run by hand::

    .venv/bin/python benchmarks/scaling.py
    .venv/bin/python benchmarks/scaling.py --frames 60 --warm-up 20 --spots 30,300 --sizes 256,512   # quick
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

import _common
import numpy as np

from plstream.acquire_adapters import SimulatedCamera, SimulationParams
from plstream.analysis import StreamingAnalyzer
from plstream.analysis.warmup import compile_kernels
from plstream.config import Settings

logger = logging.getLogger("benchmarks.scaling")

_SPOT_SWEEP_SIZE = 512


@dataclass
class Point:
    """One configuration's measurement."""

    sweep: str
    params: SimulationParams
    found: int
    frames: int
    seconds: float
    fits: int
    stages: dict[str, float]

    @property
    def ms_per_frame(self) -> float:
        return self.seconds / self.frames * 1e3


def measure(
    sweep: str, params: SimulationParams, warm_up: int, seed: int, settings: Settings, timer: _common.StageTimer
) -> Point:
    """Analyze ``params.n_frames`` frames, timing those after ``warm_up``."""
    camera = SimulatedCamera(params, seed)
    analyzer = StreamingAnalyzer(settings, params.shape, _common.camera_model_of(camera.describe()))
    total = 0.0
    made_before = 0
    for t in range(params.n_frames):
        frame = camera.render_frame(t)  # not timed
        if t == warm_up:
            timer.reset()
            made_before = analyzer.fits_made
        started = time.perf_counter()
        analyzer.process(t, t / params.frame_rate_hz, frame)
        elapsed = time.perf_counter() - started
        if t >= warm_up:
            total += elapsed
    stages = dict(timer.totals)
    stages["other"] = max(0.0, total - sum(stages.values()))
    n = params.n_frames - warm_up
    return Point(
        sweep,
        params,
        len(analyzer.spots),
        n,
        total,
        analyzer.fits_made - made_before,
        {k: v / n * 1e3 for k, v in stages.items()},
    )


def cost_model(points: list[Point]) -> tuple[np.ndarray, float] | None:
    """Least squares ``ms/frame = a + b * Mpx + c * kspots``; (coefficients, rms residual), None if too few rows."""
    if len({(p.params.shape, p.params.n_emitters) for p in points}) < 3:
        return None
    design = np.array([[1.0, p.params.shape[0] * p.params.shape[1] / 1e6, p.found / 1e3] for p in points])
    target = np.array([p.ms_per_frame for p in points])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = float(np.sqrt(np.mean((design @ coef - target) ** 2)))
    return coef, residual


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Run both sweeps and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--spots",
        type=_int_list,
        default=[30, 100, 300, 1000, 3000],
        help="emitter counts of the spot sweep, at 512x512 px (default 30,100,300,1000,3000)",
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=[256, 512, 1024, 2048],
        help="frame sizes of the size sweep, px (default 256,512,1024,2048)",
    )
    parser.add_argument(
        "--size-emitters", type=int, default=300, help="emitters in every frame of the size sweep (default 300)"
    )
    parser.add_argument("--frames", type=int, default=150, help="frames per configuration (default 150)")
    parser.add_argument("--warm-up", type=int, default=50, help="first frames analyzed but not timed (default 50)")
    _common.add_common_arguments(parser)
    args = _common.parse_arguments(parser, argv)
    if not 0 <= args.warm_up < args.frames:
        parser.error("need 0 <= --warm-up < --frames")
    if min(args.sizes) < 32:
        parser.error("--sizes must be at least 32 px")

    configs = [("spots", _common.simulation_params(_SPOT_SWEEP_SIZE, args.frames, n)) for n in args.spots]
    configs += [("size", _common.simulation_params(s, args.frames, args.size_emitters)) for s in args.sizes]
    settings = _common.settings_from(parser, args.overrides)
    print("compiling / loading the analysis kernels...", file=sys.stderr, flush=True)
    compile_kernels()
    timer = _common.StageTimer()
    points: list[Point] = []
    with _common.instrument_analyzer(timer) as timed:
        for sweep, params in configs:
            print(
                f"{sweep} sweep: {params.shape[0]}x{params.shape[1]} px, {params.n_emitters} emitters...",
                file=sys.stderr,
                flush=True,
            )
            timer.reset()
            points.append(measure(sweep, params, args.warm_up, args.seed, settings, timer))

    stage_names = [*timed, "other"]
    headers = [
        "sweep",
        "size px",
        "emitters",
        "sep px",
        "found",
        "frames/s",
        "ms/frame",
        *(f"{s} ms" for s in stage_names),
        "us/fit",
    ]
    rows = []
    for p in points:
        fit_ms = p.stages.get("fit")
        rows.append(
            [
                p.sweep,
                f"{p.params.shape[0]}",
                f"{p.params.n_emitters}",
                f"{p.params.min_separation_px:.1f}",
                f"{p.found}",
                f"{1e3 / p.ms_per_frame:,.1f}",
                f"{p.ms_per_frame:.2f}",
                *(f"{p.stages[s]:.2f}" for s in stage_names),
                f"{fit_ms * 1e3 * p.frames / p.fits:.1f}" if fit_ms is not None and p.fits else None,
            ]
        )
    title = (
        f"plstream analyzer scaling (in-process, no transport, no file): {args.frames - args.warm_up} timed "
        f"frames per row after {args.warm_up} warm-up frames, seed {args.seed}; "
        f"{_common.settings_note(args.overrides)}\n"
        f"machine: {_common.machine_description()}\n"
    )
    notes = [
        "",
        "Spot sweep at 512x512 px; size sweep at a fixed emitter count (not a fixed density). "
        "Stage columns are exclusive ms/frame; us/fit = fit stage time per fit made (spots pre-screened "
        "as OFF are not fitted).",
    ]
    model = cost_model(points)
    if model is not None:
        (a, b, c), residual = model
        notes.append(
            f"cost model (least squares over all rows): ms/frame = {a:.2f} + {b:.2f} * Mpx + "
            f"{c:.2f} * (1000 spots found); rms residual {residual:.2f} ms"
        )
    print(_common.format_table(headers, rows, title=title, notes=notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
