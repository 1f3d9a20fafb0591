"""What the trace and drift plots share: their time axis (frames or seconds) and how many points they draw."""

from __future__ import annotations

import pyqtgraph as pg

__all__ = ["plot_points", "set_time_axis"]


def set_time_axis(plot: pg.PlotWidget, x_axis: str) -> None:
    """Label ``plot``'s bottom axis for ``x_axis`` ("frames" or "seconds")."""
    if x_axis == "seconds":
        plot.setLabel("bottom", "time", units="s")
    else:
        plot.setLabel("bottom", "frame")


def plot_points(plot: pg.PlotWidget) -> int:
    """Points worth drawing across ``plot``: about two per screen pixel (at least 200; changes on resize)."""
    return max(200, 2 * int(plot.getViewBox().width() or 800))
