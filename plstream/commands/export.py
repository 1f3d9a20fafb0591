"""``plstream export KIND RESULT.h5``: CSV, DataFrame, figures and annotated video of a result (finished or running)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from plstream.errors import EXIT_OK, UsageError

__all__ = ["export", "parse_spots"]


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


def export(args: argparse.Namespace) -> int:
    """Write the export ``args.kind`` of ``args.result``."""
    from plstream.analysis import exports

    result = Path(args.result)
    if not result.is_file():
        raise UsageError(f"no result file at {result}")
    stem = result.with_suffix("")
    movie = Path(args.movie) if args.movie else None
    if args.kind in ("video", "fit"):
        if movie is None:
            raise UsageError(f"plstream export {args.kind} needs the movie: --movie MOVIE")
        if not movie.exists():
            raise UsageError(f"no movie at {movie}")
    try:
        if args.kind == "csv":
            out = exports.export_csv(result, _destination(args, stem.with_suffix(".csv")), progress=_Progress("frames"))
        elif args.kind == "traces":
            out = _destination(args, stem.with_suffix(".traces.pkl"))
            exports.load_traces(result).to_pickle(out)
        elif args.kind == "image":
            out = exports.export_image(result, _destination(args, stem.with_suffix(".mean.png")))
        elif args.kind == "video":
            assert movie is not None
            out = exports.export_video(
                result, movie, _destination(args, stem.with_suffix(".annotated.mp4")), progress=_Progress("frames")
            )
        elif args.kind == "fit":
            if args.spot is None or args.frame is None:
                raise UsageError("plstream export fit needs --spot N and --frame M")
            folder = Path(args.out) if args.out else result.parent
            assert movie is not None
            out = exports.export_fit(result, movie, args.spot, args.frame, folder)
        else:
            folder = Path(args.out) if args.out else stem.with_name(stem.name + "_blinking")
            written = exports.export_blinking(
                result, folder, spots=parse_spots(args.spots), progress=_Progress("spots")
            )
            out = folder
            print(f"plstream: wrote {len(written)} files")
    except exports.ExportError as exc:
        raise UsageError(str(exc)) from exc
    print(f"export: {Path(out).resolve()}")
    return EXIT_OK
