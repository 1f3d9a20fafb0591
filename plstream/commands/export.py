"""``plstream export KIND RESULT.h5 ...``: files derived from a result file (and its movie).

One function per kind, registered in :data:`EXPORTS` (kind -> function);
the parser offers the kinds listed there. Each takes the parsed arguments
and returns the exit status.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["EXPORTS", "export"]


def _results(args: argparse.Namespace):
    from plstream.analysis.result_file import load_results

    return load_results(args.result)


def aligned(args: argparse.Namespace) -> int:
    """Every frame moved back into the reference frame (multi-page TIFF or a folder) and the alignment log."""
    from plstream.exports._inputs import movie_of
    from plstream.exports.aligned import default_aligned_path, write_aligned

    results = _results(args)
    movie = movie_of(results, args.movie)
    out = Path(args.out) if args.out else default_aligned_path(Path(args.result), movie)
    written = write_aligned(results, movie, out, overwrite=args.overwrite)
    print(
        f"plstream: {written.frames_aligned} frames aligned to frame 0 -> {written.path}"
        + (f" ({written.frames_unaligned} not analysed, written unaligned)" if written.frames_unaligned else "")
    )
    print(f"plstream: alignment log (frame, dx, dy, rotation) -> {written.log_path}")
    return 0


def validation(args: argparse.Namespace) -> int:
    """The particles re-measured on the aligned frames: motion before and after, CSVs and figures."""
    import numpy as np

    from plstream.exports._inputs import movie_of
    from plstream.exports.validation import validate_alignment

    results = _results(args)
    movie = movie_of(results, args.movie)
    stem = Path(args.result).with_suffix("")
    folder = Path(args.out) if args.out else stem.with_name(stem.name + "_validation")
    report = validate_alignment(
        results, movie, folder, particles=args.particles, max_particles=args.max_particles, overwrite=args.overwrite
    )
    print(f"plstream: validation of the drift correction on {report.frames.size} frames, particles: {report.why}")
    for row in report.table():
        print("  " + "".join(f"{cell:>18}" for cell in row))
    worst = float(np.nanmax(report.after.max_px)) if report.ids else math.nan
    print(
        f"plstream: residual motion after alignment: max {worst:.3f} px, median over particles "
        f"{float(np.nanmedian(report.after.max_px)):.3f} px; drift reduced by {report.overall_reduction_percent:.1f} %"
    )
    print(f"plstream: {len(report.files)} files -> {report.folder}")
    if not math.isfinite(worst):
        print("plstream: warning: no particle could be measured on the aligned frames", file=sys.stderr)
    return 0


EXPORTS: dict[str, Callable[[argparse.Namespace], int]] = {
    "aligned": aligned,
    "validation": validation,
}
"""Kind -> the function that writes it (the parser offers these kinds)."""


def export(args: argparse.Namespace) -> int:
    """Write the kind of export asked for."""
    return EXPORTS[args.kind](args)
