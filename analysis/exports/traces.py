"""Per-spot, per-frame rows in the PL trace extractor's schema, as pandas DataFrames (``plstream export traces``).

One row per spot per frame, spots from the frame they were found on. The
first columns are the trace extractor's, so scripts written for its CSV keep
working; the others are plstream's:

=================  =========  ================================================================
column             units      meaning
=================  =========  ================================================================
frame              1          the source's frame number (``/frames/seq``)
spot_id            1          the spot's ID (index in ``/spots``)
y, x               px         where the aperture was: reference position + drift, frame coordinates
radius             px         aperture radius
raw_signal         photons    aperture sum before background subtraction (net + bg × π r²)
bg_median          photons/px local background (annulus median, ``/traces/background``)
net_signal         photons    background-subtracted aperture sum (``/traces/intensity``)
gauss_x, gauss_y   px         fitted centre (``/fits/x``, ``/fits/y``; NaN: not fitted, off)
gauss_amp          photons    integral of the fitted Gaussian (``/fits/amplitude``)
gauss_sigma        px         fitted sigma
gauss_bg           photons/px fitted background
gauss_success      1          1 = successful fit
loc_uncertainty    px         localization standard error (Cramér-Rao bound)
time_s             s          time since the run's first frame
drift_x, drift_y   px         the frame's drift (``/drift/xy``)
state              1          causal ON/OFF state (1, 0; ``/blinking/state``)
segmented          1          refined state (1 ON, 0 OFF, 2 GRAY; ``/blinking/segmented``)
weighted_signal    photons    PSF-weighted intensity (``/traces/weighted``)
=================  =========  ================================================================

Intensities are in photons (the camera's ADU converted with its offset and
gain), not raw counts as in the trace extractor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pandas as pd

from plstream.analysis.exports._common import (
    BLOCK_FRAMES,
    Progress,
    ResultBlocks,
    aperture_radius_px,
    first_timestamp,
    frame_times,
)
from plstream.analysis.result_file import Results

__all__ = ["COLUMNS", "load_traces", "trace_blocks"]

COLUMNS = (
    "frame",
    "spot_id",
    "y",
    "x",
    "radius",
    "raw_signal",
    "bg_median",
    "net_signal",
    "gauss_x",
    "gauss_y",
    "gauss_amp",
    "gauss_sigma",
    "gauss_bg",
    "gauss_success",
    "loc_uncertainty",
    "time_s",
    "drift_x",
    "drift_y",
    "state",
    "segmented",
    "weighted_signal",
)


def _frame(block: Results, spots_xy: np.ndarray, radius: float, t0: float | None) -> pd.DataFrame:
    """The rows of one block of frames (spots not yet found at a frame are left out)."""
    n_t, n_s = block.intensity.shape
    if n_t == 0 or n_s == 0:
        return pd.DataFrame({c: [] for c in COLUMNS})
    first = np.asarray(block.spots_first_frame)[:n_s]
    t_index = block.first_frame + np.arange(n_t)
    found = (t_index[:, None] >= first[None, :]) & (first[None, :] >= 0)
    tt, ss = np.nonzero(found)
    drift = np.asarray(block.drift_xy)
    x = spots_xy[ss, 0] + drift[tt, 0]
    y = spots_xy[ss, 1] + drift[tt, 1]
    net = block.intensity[tt, ss].astype(np.float64)
    bg = block.background[tt, ss].astype(np.float64)
    return pd.DataFrame(
        {
            "frame": np.asarray(block.seq)[tt],
            "spot_id": ss.astype(np.int64),
            "y": y,
            "x": x,
            "radius": np.full(len(tt), radius),
            "raw_signal": net + bg * np.pi * radius**2,
            "bg_median": bg,
            "net_signal": net,
            "gauss_x": block.fit_x[tt, ss],
            "gauss_y": block.fit_y[tt, ss],
            "gauss_amp": block.fit_amplitude[tt, ss].astype(np.float64),
            "gauss_sigma": block.fit_sigma[tt, ss].astype(np.float64),
            "gauss_bg": block.fit_background[tt, ss].astype(np.float64),
            "gauss_success": block.fit_success[tt, ss].astype(np.int64),
            "loc_uncertainty": block.fit_uncertainty[tt, ss].astype(np.float64),
            "time_s": frame_times(block, t0)[tt],
            "drift_x": drift[tt, 0],
            "drift_y": drift[tt, 1],
            "state": block.state[tt, ss].astype(np.int64),
            "segmented": block.segmented[tt, ss].astype(np.int64),
            "weighted_signal": block.weighted[tt, ss].astype(np.float64),
        },
        columns=list(COLUMNS),
    )


def trace_blocks(
    blocks: ResultBlocks, *, block_frames: int = BLOCK_FRAMES, progress: Progress | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of a result, one DataFrame per block of frames (bounded memory)."""
    head = blocks.head
    spots_xy = np.column_stack([head.spots_x, head.spots_y])
    radius = aperture_radius_px(head)
    t0 = first_timestamp(blocks)
    done = 0
    for block in blocks.blocks(block_frames):
        done += block.n_frames
        yield _frame(block, spots_xy, radius, t0)
        if progress is not None:
            progress(done, blocks.n_frames)


def load_traces(path: str | os.PathLike[str], *, spots: list[int] | None = None) -> pd.DataFrame:
    """A result file as one DataFrame, one row per spot per frame (columns :data:`COLUMNS`).

    Works on a finished file and on one still being written (what was
    committed when it is called). ``spots`` keeps only those spot IDs.

    Examples
    --------
    >>> df = load_traces("run.h5")  # doctest: +SKIP
    >>> df[df.spot_id == 3].plot(x="time_s", y="net_signal")  # doctest: +SKIP
    >>> df.pivot(index="frame", columns="spot_id", values="net_signal")  # doctest: +SKIP
    """
    with ResultBlocks.open(path) as blocks:
        parts = []
        for part in trace_blocks(blocks):
            parts.append(part if spots is None else part[part.spot_id.isin(spots)])
    if not parts:
        return pd.DataFrame({c: [] for c in COLUMNS})
    return pd.concat(parts, ignore_index=True)
