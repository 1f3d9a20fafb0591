"""Blinking statistics of a run: per-spot dwell statistics and the ensemble's dwell-time fits.

:func:`summarize` turns the final states (as runs, from a
:class:`~plstream.analysis.intermittency.segmenter.Segmenter`, or as a
``(T, S)`` state array from a result file) into :class:`BlinkingSummary`:
``spot_stats`` (one row per spot, columns :data:`SPOT_STATS_COLUMNS`, stored
as ``/blinking/spot_stats``) and the ensemble fits (stored as the attributes
of ``/blinking/ensemble``). Dwell times are in frames; the frame interval
converts them to seconds where known.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plstream.analysis.intermittency.dwells import DwellTable, dwells_from_segments, dwells_from_states
from plstream.analysis.intermittency.fits import DwellFit, fit_dwell_times, fit_power_law
from plstream.analysis.intermittency.segmenter import GRAY, OFF, ON
from plstream.analysis.result_file import layout as _layout

__all__ = ["SPOT_STATS_COLUMNS", "BlinkingSummary", "summarize", "summarize_states"]

SPOT_STATS_COLUMNS: tuple[str, ...] = _layout.SPOT_STATS_COLUMNS
"""Columns of ``/blinking/spot_stats``: frames measured; fraction of them ON / OFF / GRAY; dwells (events) per
state (all, censored ones included); mean complete dwell per state, frames (NaN: none); censored dwells; mean
intensity of the ON / OFF / GRAY frames, photons; the thresholds, photons; 1 when the trace ends photobleached;
the spot's own power-law exponents above the ensemble's t_min, with standard errors (NaN: fewer than 10 dwells)."""
_MIN_SPOT_DWELLS = 10


@dataclass(frozen=True)
class BlinkingSummary:
    """Per-spot statistics and ensemble fits of a run.

    Attributes
    ----------
    spot_stats : (S, len(SPOT_STATS_COLUMNS)) float64
    dwells : DwellTable
        Every dwell of every spot.
    fit_on, fit_off : DwellFit or None
        The ensemble fits of the ON and OFF dwell times (None: too few dwells).
    frame_interval_s : float or None
    """

    spot_stats: np.ndarray
    dwells: DwellTable
    fit_on: DwellFit | None
    fit_off: DwellFit | None
    frame_interval_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        return self.spot_stats[:, SPOT_STATS_COLUMNS.index(name)]

    def ensemble_attrs(self) -> dict[str, Any]:
        """The attributes of ``/blinking/ensemble`` (see docs/result_layout.md)."""
        out: dict[str, Any] = {}
        for kind, f in (("on", self.fit_on), ("off", self.fit_off)):
            if f is None:
                out.update(
                    {
                        f"alpha_{kind}": math.nan,
                        f"alpha_{kind}_error": math.nan,
                        f"t_min_{kind}_frames": -1,
                        f"model_{kind}": "",
                        f"n_{kind}_dwells": 0,
                        f"n_{kind}_censored": 0,
                    }
                )
                continue
            out[f"alpha_{kind}"] = f.alpha
            out[f"alpha_{kind}_error"] = f.alpha_error
            out[f"t_min_{kind}_frames"] = int(f.t_min)
            out[f"model_{kind}"] = f.best
            out[f"n_{kind}_dwells"] = int(f.n_complete)
            out[f"n_{kind}_censored"] = int(f.n_censored)
        t_mins = [f.t_min for f in (self.fit_on, self.fit_off) if f is not None]
        out["t_min"] = int(min(t_mins)) if t_mins else -1
        out["model"] = ",".join(f"{k}:{f.best}" for k, f in (("on", self.fit_on), ("off", self.fit_off)) if f)
        out["frame_interval_s"] = float(self.frame_interval_s) if self.frame_interval_s else math.nan
        out["fits_json"] = json.dumps(
            {k: (f.to_dict() if f else None) for k, f in (("on", self.fit_on), ("off", self.fit_off))},
            default=float,
        )
        return out


def _spot_rows(
    n_spots: int, dwells: DwellTable, state_means: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    stats = np.full((n_spots, len(SPOT_STATS_COLUMNS)), np.nan)
    col = {name: i for i, name in enumerate(SPOT_STATS_COLUMNS)}
    spot, state, length = dwells.spot, dwells.state, dwells.length
    complete = dwells.complete
    frames = np.bincount(spot, weights=length, minlength=n_spots)[:n_spots]
    stats[:, col["n_frames"]] = frames
    for name, st in (("on", ON), ("off", OFF), ("gray", GRAY)):
        sel = state == st
        in_state = np.bincount(spot[sel], weights=length[sel], minlength=n_spots)[:n_spots]
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[:, col[f"{name}_fraction"]] = np.where(frames > 0, in_state / np.maximum(frames, 1), np.nan)
        stats[:, col[f"n_{name}_events"]] = np.bincount(spot[sel], minlength=n_spots)[:n_spots]
        c = sel & complete
        n_c = np.bincount(spot[c], minlength=n_spots)[:n_spots]
        sum_c = np.bincount(spot[c], weights=length[c], minlength=n_spots)[:n_spots]
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[:, col[f"mean_{name}_frames"]] = np.where(n_c > 0, sum_c / np.maximum(n_c, 1), np.nan)
    stats[:, col["n_censored"]] = np.bincount(spot[~complete], minlength=n_spots)[:n_spots]
    stats[:, col["off_level"]] = state_means[:, 0]
    stats[:, col["gray_level"]] = state_means[:, 1]
    stats[:, col["on_level"]] = state_means[:, 2]
    stats[:, col["off_threshold"]], stats[:, col["on_threshold"]] = thresholds
    stats[:, col["bleached"]] = np.bincount(spot[dwells.bleached], minlength=n_spots)[:n_spots] > 0
    return stats


def _fit_spots(stats: np.ndarray, dwells: DwellTable, fits: dict[str, DwellFit | None]) -> None:
    col = {name: i for i, name in enumerate(SPOT_STATS_COLUMNS)}
    for name, st in (("on", ON), ("off", OFF)):
        ensemble = fits[name]
        if ensemble is None:
            continue
        for i in np.unique(dwells.spot):
            sel = dwells.spot == i
            mine = DwellTable(*(getattr(dwells, f)[sel] for f in DwellTable.__dataclass_fields__))
            c, r = mine.of_state(st)
            if np.count_nonzero(c >= ensemble.t_min) < _MIN_SPOT_DWELLS:
                continue
            f = fit_power_law(c, r, ensemble.t_min)
            stats[i, col[f"alpha_{name}"]] = f.params["alpha"]
            stats[i, col[f"alpha_{name}_error"]] = f.errors["alpha"]


def _finish(
    n_spots: int,
    dwells: DwellTable,
    state_means: np.ndarray,
    thresholds: tuple[np.ndarray, np.ndarray],
    frame_interval_s: float | None,
    per_spot_fits: bool,
) -> BlinkingSummary:
    stats = _spot_rows(n_spots, dwells, state_means, thresholds)
    fits: dict[str, DwellFit | None] = {}
    for name, st in (("on", ON), ("off", OFF)):
        c, r = dwells.of_state(st)
        fits[name] = fit_dwell_times(c, r)
    if per_spot_fits:
        _fit_spots(stats, dwells, fits)
    return BlinkingSummary(stats, dwells, fits["on"], fits["off"], frame_interval_s)


def summarize(
    segmenter: Any,
    *,
    bleach_min_frames: int = 100,
    frame_interval_s: float | None = None,
    per_spot_fits: bool = True,
) -> BlinkingSummary:
    """Statistics of a finished :class:`~plstream.analysis.intermittency.segmenter.Segmenter`."""
    n = segmenter.n_spots
    spot, runs = segmenter.runs()
    tables = []
    bounds = np.searchsorted(spot, np.arange(n + 1))
    for i in range(n):
        a, b = bounds[i], bounds[i + 1]
        if a < b:
            tables.append(
                dwells_from_segments(
                    i,
                    runs.start[a:b],
                    runs.length[a:b],
                    runs.state[a:b],
                    runs.starts_piece[a:b],
                    bleach_min_frames=bleach_min_frames,
                )
            )
    return _finish(
        n,
        DwellTable.concatenate(tables),
        segmenter.state_means(),
        segmenter.thresholds(),
        frame_interval_s,
        per_spot_fits,
    )


def summarize_states(
    states: np.ndarray,
    values: np.ndarray,
    seq: np.ndarray | None = None,
    *,
    bleach_min_frames: int = 100,
    thresholds: tuple[np.ndarray, np.ndarray] | None = None,
    frame_interval_s: float | None = None,
    per_spot_fits: bool = True,
) -> BlinkingSummary:
    """Statistics of per-frame states ``(T, S)`` (``-1`` = not measured) and the intensities they were read from."""
    states = np.asarray(states, dtype=np.int8)
    values = np.asarray(values, dtype=np.float64)
    n = states.shape[1]
    tables = [dwells_from_states(states[:, i], seq, spot=i, bleach_min_frames=bleach_min_frames) for i in range(n)]
    means = np.full((n, 3), np.nan)
    for column, st in enumerate((OFF, GRAY, ON)):
        sel = states == st
        count = sel.sum(axis=0)
        total = np.where(sel, values, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, column] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    if thresholds is None:
        thresholds = (np.full(n, np.nan), np.full(n, np.nan))
    return _finish(n, DwellTable.concatenate(tables), means, thresholds, frame_interval_s, per_spot_fits)
