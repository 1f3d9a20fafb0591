"""``plstream export KIND RESULT.h5 ...``: files derived from a result file (finished or still running) and its movie.

One function per kind, registered in :data:`EXPORTS` (kind -> function); the
parser offers the kinds listed there. Each takes the parsed arguments and
returns the exit status; the work is done by :mod:`plstream.analysis.exports`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from plstream.errors import EXIT_OK, UsageError

__all__ = ["EXPORTS", "export", "parse_spots"]


def parse_spots(text: str | None) -> list[int] | None:
    """``None`` (all), ``[]`` ('none'), or the IDs in ``"0,3,7"`` / ``"0-9"`` / a mix."""
    if text is None or text == "all":
        return None
    if text == "none":
        return []
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                first, last = part.split("-", 1)
                out.extend(range(int(first), int(last) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise UsageError(f"--spots {text!r}: give spot IDs like 0,3,7 or 0-9, 'all' or 'none'") from None
    return out


class _Progress:
    """``export: 1200/2000 frames (60 %), 3.1 s`` on one line of stderr."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._started = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < (0.25 if self._tty else 5.0):
            return
        self._last = now
        pct = f" ({100 * done / total:.0f} %)" if total else ""
        line = f"plstream: export {done}/{total} {self._what}{pct}, {now - self._started:.1f} s"
        print(("\r" if self._tty else "") + line, end="" if self._tty else "\n", file=sys.stderr, flush=True)
        if done >= total and self._tty:
            print(file=sys.stderr)


def _destination(args: argparse.Namespace, default: Path) -> Path:
    out = Path(args.out) if args.out else default
    if out.exists() and out.is_file() and not args.overwrite:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite")
    return out


def _checked_movie(args: argparse.Namespace) -> Path:
    if not args.movie:
        raise UsageError(f"plstream export {args.kind} needs the movie: --movie MOVIE")
    movie = Path(args.movie)
    if not movie.exists():
        raise UsageError(f"no movie at {movie}")
    return movie


def csv(args: argparse.Namespace) -> int:
    """One row per spot per frame in the trace extractor's schema, plus plstream's columns."""
    from plstream.analysis.exports import export_csv

    stem = Path(args.result).with_suffix("")
    out = export_csv(args.result, _destination(args, stem.with_suffix(".csv")), progress=_Progress("frames"))
    print(f"export: {Path(out).resolve()}")
    return EXIT_OK


def traces(args: argparse.Namespace) -> int:
    """The same rows as a pickled pandas DataFrame (for scripts and notebooks: ``load_traces`` in Python)."""
    from plstream.analysis.exports import load_traces

    out = _destination(args, Path(args.result).with_suffix(".traces.pkl"))
    load_traces(args.result).to_pickle(out)
    print(f"export: {out.resolve()}")
    return EXIT_OK


def image(args: argparse.Namespace) -> int:
    """The drift-corrected mean image with every spot circled and labelled (PNG)."""
    from plstream.analysis.exports import export_image

    out = export_image(args.result, _destination(args, Path(args.result).with_suffix(".mean.png")))
    print(f"export: {Path(out).resolve()}")
    return EXIT_OK


def video(args: argparse.Namespace) -> int:
    """The movie annotated with every spot at its drift-corrected position (MP4, streaming)."""
    from plstream.analysis.exports import export_video

    movie = _checked_movie(args)
    out = _destination(args, Path(args.result).with_suffix(".annotated.mp4"))
    out = export_video(args.result, movie, out, progress=_Progress("frames"))
    print(f"export: {Path(out).resolve()}")
    return EXIT_OK


def fit(args: argparse.Namespace) -> int:
    """One spot's Gaussian fit in one frame: data, model and residuals (PNG)."""
    from plstream.analysis.exports import export_fit

    if args.spot is None or args.frame is None:
        raise UsageError("plstream export fit needs --spot N and --frame M")
    movie = _checked_movie(args)
    folder = Path(args.out) if args.out else Path(args.result).parent
    out = export_fit(args.result, movie, args.spot, args.frame, folder)
    print(f"export: {Path(out).resolve()}")
    return EXIT_OK


def blinking(args: argparse.Namespace) -> int:
    """Per-spot blinking figures, a summary CSV (one row per spot) and the ensemble figure."""
    from plstream.analysis.exports import export_blinking

    stem = Path(args.result).with_suffix("")
    folder = Path(args.out) if args.out else stem.with_name(stem.name + "_blinking")
    written = export_blinking(args.result, folder, spots=parse_spots(args.spots), progress=_Progress("spots"))
    print(f"plstream: wrote {len(written)} files")
    print(f"export: {folder.resolve()}")
    return EXIT_OK


def _results(args: argparse.Namespace):
    from plstream.analysis.result_file import load_results

    return load_results(args.result)


def aligned(args: argparse.Namespace) -> int:
    """Every frame moved back into the reference frame (multi-page TIFF or a folder) and the alignment log."""
    from plstream.analysis.exports._inputs import movie_of
    from plstream.analysis.exports.aligned import default_aligned_path, write_aligned

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

    from plstream.analysis.exports._inputs import movie_of
    from plstream.analysis.exports.validation import validate_alignment

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
    "csv": csv,
    "traces": traces,
    "image": image,
    "video": video,
    "fit": fit,
    "blinking": blinking,
    "aligned": aligned,
    "validation": validation,
}
"""Kind -> the function that writes it (the parser offers these kinds)."""


def export(args: argparse.Namespace) -> int:
    """Write the kind of export asked for."""
    if not Path(args.result).is_file():
        raise UsageError(f"no result file at {args.result}")
    return EXPORTS[args.kind](args)
