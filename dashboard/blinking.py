"""The dashboard's blinking statistics, computed from the rows it already holds (no Qt).

:func:`blinking_snapshot` runs the analysis's own refined-state segmentation
(:class:`~plstream.analysis.intermittency.Segmenter`) over the held
intensity traces and causal states, and the ensemble dwell-time fits, and
returns a frozen :class:`BlinkingSnapshot`. :class:`BlinkingTracker`
recomputes it in a background thread when new rows came, never more than
about a fifth of a core (it waits at least four times as long as the last
computation took), so the window never waits for it. The live protocol is
unchanged: everything comes from the rows (``intensity``, ``state``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plstream.analysis.intermittency import (
    DwellTable,
    Segmenter,
    SegmentParams,
    dwells_from_segments,
    fit_dwell_times,
    log_binned_density,
)

__all__ = ["BlinkingSnapshot", "BlinkingTracker", "DwellPlot", "blinking_snapshot"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DwellPlot:
    """One state's ensemble dwell-time distribution, ready for a log-log plot (frames).

    Attributes
    ----------
    x, density : (k,) float64
        Log-binned probability density of the complete dwells (per frame).
    n_complete, n_censored : int
    alpha, alpha_error : float
        The power law fitted above ``t_min`` (NaN: too few dwells).
    t_min : int
    model : str
        The model with the lowest AIC ("" when not fitted).
    line_x, line_y : (m,) float64
        The fitted power law over the density (empty when not fitted).
    """

    x: np.ndarray
    density: np.ndarray
    n_complete: int
    n_censored: int
    alpha: float
    alpha_error: float
    t_min: int
    model: str
    line_x: np.ndarray
    line_y: np.ndarray


@dataclass(frozen=True)
class BlinkingSnapshot:
    """Refined states of every held spot and the ensemble's dwell-time distributions.

    Attributes
    ----------
    rows_version, n_frames : int
        What it was computed from.
    states : (S, T) int8
        Refined states (1 ON, 0 OFF, 2 GRAY, -1 not measured), spot-major like the model's rows.
    levels : (S, 3) float64
        ``[L_off, L_on, L_gray]`` photons (of the aperture intensity).
    thresholds : (S, 2) float64
        ``[off_threshold, on_threshold]`` photons.
    on, off : DwellPlot
    seconds : float
        How long the computation took, s.
    """

    rows_version: int
    n_frames: int
    states: np.ndarray
    levels: np.ndarray
    thresholds: np.ndarray
    on: DwellPlot
    off: DwellPlot
    seconds: float


def _plot(dwells: DwellTable, state: int) -> DwellPlot:
    complete, censored = dwells.of_state(state)
    x, density, _ = log_binned_density(complete)
    fit = fit_dwell_times(complete, censored) if len(complete) >= 10 else None
    if fit is None:
        return DwellPlot(x, density, len(complete), len(censored), np.nan, np.nan, -1, "", np.zeros(0), np.zeros(0))
    frac = np.count_nonzero(complete >= fit.t_min) / len(complete)
    x0 = fit.t_min - 0.5
    line_x = np.geomspace(fit.t_min, max(float(complete.max()), 2.0 * fit.t_min), 50)
    line_y = frac * (fit.alpha - 1.0) / x0 * (line_x / x0) ** (-fit.alpha)
    return DwellPlot(
        x, density, len(complete), len(censored), fit.alpha, fit.alpha_error, fit.t_min, fit.best, line_x, line_y
    )


def blinking_snapshot(
    seq: np.ndarray,
    intensity: np.ndarray,
    state: np.ndarray,
    rows_version: int = 0,
    params: SegmentParams | None = None,
) -> BlinkingSnapshot:
    """Refined states and ensemble dwell-time distributions of held rows.

    Parameters
    ----------
    seq : (T,) int
    intensity : (S, T) float
        Aperture intensity, photons (NaN: not measured).
    state : (S, T) int8
        Causal states.
    """
    started = time.monotonic()
    n_spots, n_frames = intensity.shape
    seg = Segmenter(params)
    if n_frames and n_spots:
        seg.push_block(np.asarray(seq), np.asarray(intensity, np.float64).T, np.asarray(state).T)
    seg.finish()
    states = np.full((n_spots, n_frames), -1, np.int8)
    spot, runs = seg.runs()
    tables = []
    bounds = np.searchsorted(spot, np.arange(n_spots + 1))
    for i in range(n_spots):
        a, b = bounds[i], bounds[i + 1]
        for first, count, st in zip(runs.start[a:b], runs.length[a:b], runs.state[a:b]):
            states[i, first : first + count] = st
        if a < b:
            tables.append(
                dwells_from_segments(i, runs.start[a:b], runs.length[a:b], runs.state[a:b], runs.starts_piece[a:b])
            )
    dwells = DwellTable.concatenate(tables)
    off_thr, on_thr = seg.thresholds() if n_spots else (np.zeros(0), np.zeros(0))
    return BlinkingSnapshot(
        rows_version=rows_version,
        n_frames=n_frames,
        states=states,
        levels=seg.levels() if n_spots else np.zeros((0, 3)),
        thresholds=np.column_stack([off_thr, on_thr]) if n_spots else np.zeros((0, 2)),
        on=_plot(dwells, 1),
        off=_plot(dwells, 0),
        seconds=time.monotonic() - started,
    )


class BlinkingTracker:
    """Keeps the latest :class:`BlinkingSnapshot` of a model's rows, recomputed in a background thread.

    Parameters
    ----------
    read_rows : callable returning (rows_version, seq, intensity, state) or None
        Copies of the rows to analyze (called from the worker thread; it takes the model's lock).
    min_interval_s : float
        Least time between two computations.
    clock : callable returning seconds
    """

    def __init__(
        self,
        read_rows: Callable[[], tuple[int, np.ndarray, np.ndarray, np.ndarray] | None],
        *,
        min_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_rows = read_rows
        self._min_interval_s = float(min_interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: BlinkingSnapshot | None = None
        self._thread: threading.Thread | None = None
        self._next_at = -np.inf
        self.version = 0
        """Increments with every new snapshot."""

    def snapshot(self, rows_version: int, *, wait: bool = False) -> BlinkingSnapshot | None:
        """The latest snapshot; starts a new computation when rows changed and it is time (``wait``: finish it)."""
        with self._lock:
            stale = self._snapshot is None or self._snapshot.rows_version != rows_version
            busy = self._thread is not None and self._thread.is_alive()
            if stale and not busy and (wait or self._clock() >= self._next_at):
                self._thread = threading.Thread(target=self._compute, name="plstream-dashboard-blinking", daemon=True)
                self._thread.start()
            thread = self._thread
        if wait and thread is not None:
            thread.join()
        with self._lock:
            return self._snapshot

    def _compute(self) -> None:
        try:
            rows = self._read_rows()
            if rows is None:
                return
            snapshot = blinking_snapshot(rows[1], rows[2], rows[3], rows[0])
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            logger.exception("the dashboard's blinking statistics failed")
            with self._lock:
                self._next_at = self._clock() + 10 * self._min_interval_s
            return
        with self._lock:
            if self._snapshot is None or snapshot.rows_version >= self._snapshot.rows_version:
                self._snapshot = snapshot
                self.version += 1
            self._next_at = self._clock() + max(self._min_interval_s, 4.0 * snapshot.seconds)
