"""``plstream export csv``: the trace extractor's per-spot, per-frame CSV (columns in :mod:`.traces`)."""

from __future__ import annotations

import os
from pathlib import Path

from plstream.analysis.exports._common import Progress, ResultBlocks, atomic_output
from plstream.analysis.exports.traces import COLUMNS, trace_blocks

__all__ = ["export_csv"]


def export_csv(
    result: str | os.PathLike[str], out: str | os.PathLike[str], *, progress: Progress | None = None
) -> Path:
    """Write one CSV row per spot per frame; streams block by block (memory does not grow with the run).

    Floats are written with full precision, so reading the CSV back gives the
    values of the HDF5 file. Works on a finished result and on one still
    being written (the frames committed when it starts).

    Returns
    -------
    pathlib.Path
        The CSV written.
    """
    out = Path(out)
    with ResultBlocks.open(result) as blocks, atomic_output(out) as partial:
        with open(partial, "w", newline="", encoding="utf-8") as fh:
            fh.write(",".join(COLUMNS) + "\n")
            for frame in trace_blocks(blocks, progress=progress):
                frame.to_csv(fh, header=False, index=False, lineterminator="\n")
    return out
