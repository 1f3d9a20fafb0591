"""Blinking (intermittency) analysis: refined ON / OFF / GRAY states, dwell times and their distributions.

- :mod:`.segmenter`: :class:`Segmenter`, change points and levels (PELT) and
  per-frame states (HMM decoding with a bounded look-ahead), as frames arrive;
- :mod:`.dwells`: dwell times with censoring (:class:`DwellTable`);
- :mod:`.fits`: maximum-likelihood power-law, truncated power-law and
  exponential fits with a lower cut-off chosen from the data (:func:`fit_dwell_times`);
- :mod:`.summary`: per-spot statistics and ensemble fits (:func:`summarize`);
- :mod:`.from_results`: the same for a result file (:func:`blinking_of`).
"""

from plstream.analysis.intermittency.dwells import (
    DwellTable,
    dwells_from_segments,
    dwells_from_states,
    log_binned_density,
)
from plstream.analysis.intermittency.fits import DwellFit, ModelFit, fit_dwell_times
from plstream.analysis.intermittency.from_results import BlinkingOfRun, blinking_of
from plstream.analysis.intermittency.segmenter import GRAY, NOT_MEASURED, OFF, ON, Segmenter, SegmentParams
from plstream.analysis.intermittency.summary import SPOT_STATS_COLUMNS, BlinkingSummary, summarize, summarize_states

__all__ = [
    "GRAY",
    "NOT_MEASURED",
    "OFF",
    "ON",
    "SPOT_STATS_COLUMNS",
    "BlinkingOfRun",
    "BlinkingSummary",
    "DwellFit",
    "DwellTable",
    "ModelFit",
    "SegmentParams",
    "Segmenter",
    "blinking_of",
    "dwells_from_segments",
    "dwells_from_states",
    "fit_dwell_times",
    "log_binned_density",
    "summarize",
    "summarize_states",
]
