"""The blinking statistics of a result file, finished or still growing (for exports and notebooks)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from plstream.analysis.intermittency.segmenter import Segmenter, SegmentParams, signal_of
from plstream.analysis.intermittency.summary import BlinkingSummary, summarize_states
from plstream.analysis.result_file import ResultFollower, Results

__all__ = ["BlinkingOfRun", "blinking_of"]


@dataclass(frozen=True)
class BlinkingOfRun:
    """Refined states, the trace they were read from, levels and statistics of a run.

    Attributes
    ----------
    results : Results
        The file's contents (all committed frames).
    states : (T, S) int8
        Final refined states (1 ON, 0 OFF, 2 GRAY; -1 not measured or not final yet).
    signal : (T, S) float
        The trace the states were read from, photons.
    signal_name : str
        ``weighted`` or ``intensity``.
    levels : (S, 3) float
        ``[L_off, L_on, L_gray]``, photons.
    summary : BlinkingSummary
    recomputed : bool
        The file had no refined states (plstream < 0.4): they were computed here.
    """

    results: Results
    states: np.ndarray
    signal: np.ndarray
    signal_name: str
    levels: np.ndarray
    summary: BlinkingSummary
    recomputed: bool

    @property
    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(off_threshold, on_threshold)`` per spot, photons."""
        c = self.summary
        return c.column("off_threshold"), c.column("on_threshold")


def _params(results: Results) -> tuple[SegmentParams, str, int]:
    blinking = results.settings.get("blinking", {})
    defaults = SegmentParams()
    names = [f for f in SegmentParams.__dataclass_fields__ if f not in ("max_candidates", "level_memory_frames")]
    params = SegmentParams(**{n: type(getattr(defaults, n))(blinking.get(n, getattr(defaults, n))) for n in names})

    class _B:
        segment_signal = blinking.get("segment_signal", "weighted")

    return params, signal_of(_B), int(blinking.get("bleach_min_frames", 100))


def blinking_of(source: str | os.PathLike[str] | Results) -> BlinkingOfRun:
    """Refined states and blinking statistics of a result file (or of its :class:`Results`).

    Uses the file's refined states up to where each spot's are final
    (``/blinking/final_frames``); a file written before plstream 0.4 has none,
    and they are computed here the way the analysis does.
    """
    if isinstance(source, Results):
        results = source
    else:
        with ResultFollower(source) as follower:
            results = follower.read()
    params, signal_name, bleach = _params(results)
    signal = np.asarray(getattr(results, signal_name), dtype=np.float64)
    states = np.array(results.segmented, dtype=np.int8, copy=True)
    recomputed = bool(results.n_frames and results.n_spots and not np.any(states >= 0))
    if recomputed:
        seg = Segmenter(params)
        seg.push_block(results.seq, signal, results.state, results.background)
        seg.finish()
        states[:] = -1
        for spot, first, count, state in seg.take_runs():
            states[first : first + count, spot] = state
        levels = seg.levels()
    else:
        t = np.arange(results.n_frames)[:, None]
        final = np.asarray(results.final_frames)[None, :]
        if results.status == "running":
            states[t >= final] = -1
        levels = np.asarray(results.levels, dtype=np.float64)[:, [0, 1, 2]]
    off, on = levels[:, 0], levels[:, 1]
    span = on - off
    thresholds = (off + params.off_fraction * span, off + params.on_fraction * span)
    summary = summarize_states(
        states,
        signal,
        results.seq,
        bleach_min_frames=bleach,
        thresholds=thresholds,
        frame_interval_s=results.frame_interval_s,
    )
    return BlinkingOfRun(results, states, signal, signal_name, levels, summary, recomputed)
