"""``plstream export aligned``: every frame moved back into the reference frame, and an alignment log.

Frame t is warped by the inverse of its rigid drift (``/drift/xy``,
``/drift/rotation`` about ``center_xy``): bilinear, edges repeated, in the
movie's own pixel type (16-bit stays 16-bit). The output is one multi-page
TIFF, or a folder of TIFFs with the input's file names (the default when the
movie is a folder). The log (CSV) has one row per movie frame: ``frame``
(the result row, -1 when the frame was not analysed and is written
unaligned), ``seq``, ``file``, ``dx_px``, ``dy_px``, ``rotation_rad``,
``rotation_deg``, ``method``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from plstream.acquire_adapters import open_movie
from plstream.analysis.alignment import align_frame
from plstream.analysis.exports._common import ExportError
from plstream.analysis.exports._inputs import drift_of
from plstream.analysis.result_file import Results

__all__ = ["AlignedOutput", "default_aligned_path", "write_aligned"]

logger = logging.getLogger(__name__)

_METHODS = {0: "reference", 1: "spots", 2: "registration", 3: "kept"}


@dataclass(frozen=True)
class AlignedOutput:
    """What :func:`write_aligned` wrote."""

    path: Path
    log_path: Path
    frames_aligned: int
    frames_unaligned: int


def default_aligned_path(result_path: Path, movie: Path) -> Path:
    """``<result>.aligned.tif``, or the folder ``<result>_aligned`` for a movie that is a folder."""
    stem = result_path.with_suffix("")
    return stem.with_name(stem.name + "_aligned") if movie.is_dir() else stem.with_name(stem.name + ".aligned.tif")


def _is_stack(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def write_aligned(results: Results, movie: Path, out: Path, *, overwrite: bool = False) -> AlignedOutput:
    """Write ``movie``'s frames aligned to frame 0 by the drift in ``results`` (see the module notes)."""
    stack = _is_stack(out)
    log_path = out.with_name(out.stem + ".alignment_log.csv") if stack else out / "alignment_log.csv"
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
    if not stack:
        out.mkdir(parents=True, exist_ok=True)
    drift, rotation, centre = drift_of(results)
    methods = np.asarray(results.drift_method)
    row_of = {int(seq): t for t, seq in enumerate(np.asarray(results.seq))}
    aligned = unaligned = 0
    partial = out.with_name(out.name + ".partial") if stack else None
    with contextlib.ExitStack() as stack_ctx:
        source = stack_ctx.enter_context(contextlib.closing(open_movie(movie)))
        writer = stack_ctx.enter_context(tifffile.TiffWriter(partial, bigtiff=True)) if partial else None
        log_file = stack_ctx.enter_context(open(log_path, "w", newline="", encoding="utf-8"))
        log = csv.writer(log_file)
        log.writerow(["frame", "seq", "file", "dx_px", "dy_px", "rotation_rad", "rotation_deg", "method"])
        for index, frame in enumerate(source):
            t = row_of.get(frame.seq, -1)
            name = str(frame.metadata.get("file") or f"frame_{index:06d}.tif")
            if t >= 0:
                image = align_frame(frame.data, drift[t], float(rotation[t]), centre)
                aligned += 1
                values = [f"{drift[t, 0]:.4f}", f"{drift[t, 1]:.4f}", f"{rotation[t]:.7f}"]
                values.append(f"{math.degrees(rotation[t]):.5f}")
                method = _METHODS.get(int(methods[t]), "unknown") if t < methods.size else "unknown"
            else:
                image = frame.data
                unaligned += 1
                values, method = ["", "", "", ""], "not analysed (written unaligned)"
            if writer is not None:
                writer.write(image, contiguous=True, photometric="minisblack")
            else:
                tifffile.imwrite(out / name, image, photometric="minisblack")
            log.writerow([t, frame.seq, name, *values, method])
    if partial is not None:
        partial.replace(out)
    if unaligned:
        logger.warning("%d frames of %s are not in the result file; they were written unaligned", unaligned, movie)
    return AlignedOutput(out, log_path, aligned, unaligned)
