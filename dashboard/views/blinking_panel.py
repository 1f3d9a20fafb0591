"""The blinking panel: ensemble ON and OFF dwell-time distributions (log-log, with the fitted power laws)
and the selected spot's trace coloured by its refined state, with its levels and thresholds."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtGui, QtWidgets

from plstream.dashboard.blinking import BlinkingSnapshot, DwellPlot
from plstream.dashboard.model import DashboardModel

__all__ = ["BlinkingPanel"]

#: OFF, ON, GRAY: the colours of the export figures.
STATE_RGB = {0: (59, 111, 182), 1: (224, 123, 26), 2: (150, 150, 150)}
_NAMES = {0: "OFF", 1: "ON", 2: "GRAY"}
_MAX_POINTS = 20_000


class BlinkingPanel(QtWidgets.QWidget):
    """Two log-log dwell-time plots over the selected spot's state-coloured trace.

    Redrawn when a new blinking snapshot (recomputed in the background from the
    held rows, see :mod:`plstream.dashboard.blinking`) or a new selection arrives.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.status = QtWidgets.QLabel("blinking statistics: waiting for rows")
        layout.addWidget(self.status)
        row = QtWidgets.QHBoxLayout()
        self.dwell_plots: dict[int, pg.PlotWidget] = {}
        self._points: dict[int, pg.PlotDataItem] = {}
        self._lines: dict[int, pg.PlotDataItem] = {}
        self._labels: dict[int, pg.TextItem] = {}
        for state in (1, 0):
            plot = pg.PlotWidget()
            plot.setLogMode(x=True, y=True)
            plot.setLabel("bottom", f"{_NAMES[state]} time (frames)")
            plot.setLabel("left", "probability density (1/frame)")
            plot.setTitle(f"{_NAMES[state]} dwell times, all spots")
            plot.showGrid(x=True, y=True, alpha=0.2)
            # PlotDataItems (not a ScatterPlotItem): they follow the plot's log mode
            points = pg.PlotDataItem(pen=None, symbol="o", symbolSize=6, symbolPen=None, symbolBrush=STATE_RGB[state])
            line = pg.PlotDataItem(pen=pg.mkPen("w", width=2))
            label = pg.TextItem(anchor=(0, 0), color="w")
            plot.addItem(points)
            plot.addItem(line)
            plot.addItem(label)
            self.dwell_plots[state], self._points[state], self._lines[state], self._labels[state] = (
                plot,
                points,
                line,
                label,
            )
            row.addWidget(plot)
        layout.addLayout(row, 1)
        self.trace = pg.PlotWidget()
        self.trace.setLabel("bottom", "frame")
        self.trace.setLabel("left", "intensity", units="photons")
        self.trace.addLegend(offset=(-10, 10))
        self._trace_points = {
            state: self.trace.plot(
                [],
                [],
                pen=None,
                symbol="o",
                symbolSize=3,
                symbolPen=None,
                symbolBrush=pg.mkBrush(*STATE_RGB[state]),
                name=_NAMES[state],
            )
            for state in (1, 0, 2)
        }
        self._level_lines = [pg.InfiniteLine(angle=0, pen=pg.mkPen(*STATE_RGB[s], width=1)) for s in (0, 1, 2)]
        self._threshold_lines = [
            pg.InfiniteLine(angle=0, pen=pg.mkPen("w", width=1, style=style)) for style in (_DOT, _DASH)
        ]
        for line in self._level_lines + self._threshold_lines:
            line.setVisible(False)
            self.trace.addItem(line)
        layout.addWidget(self.trace, 1)
        self._drawn: tuple[int, int] = (-1, -1)

    def update_view(self, model: DashboardModel, colors: dict[int, QtGui.QColor], *, force: bool = False) -> bool:
        """Redraw when the snapshot or the selected spot changed; returns whether it drew."""
        snapshot = model.blinking()
        spot = next(iter(colors), -1)
        key = (model.blinking_version, spot)
        if snapshot is None or (key == self._drawn and not force):
            return False
        self._drawn = key
        for state, data in ((1, snapshot.on), (0, snapshot.off)):
            self._draw_dwells(state, data)
        self._draw_trace(model, snapshot, spot)
        self.status.setText(
            f"blinking statistics of {snapshot.n_frames} frames, {len(snapshot.levels)} spots "
            f"(refined states; recomputed in {snapshot.seconds:.1f} s as rows arrive)"
        )
        return True

    def _draw_dwells(self, state: int, data: DwellPlot) -> None:
        self._points[state].setData(data.x, data.density)
        self._lines[state].setData(data.line_x, data.line_y)
        if np.isfinite(data.alpha):
            text = (
                f"α = {data.alpha:.2f} ± {data.alpha_error:.2f} (t ≥ {data.t_min} frames)\n"
                f"{data.n_complete} complete, {data.n_censored} censored; best: {data.model.replace('_', ' ')}"
            )
        else:
            text = f"{data.n_complete} complete dwells (too few to fit)"
        label = self._labels[state]
        label.setText(text)
        if len(data.x):
            label.setPos(np.log10(max(data.x.min(), 0.5)), np.log10(max(data.density.max(), 1e-12)))

    def _draw_trace(self, model: DashboardModel, snapshot: BlinkingSnapshot, spot: int) -> None:
        if not 0 <= spot < len(snapshot.levels):
            for item in self._trace_points.values():
                item.setData([], [])
            for line in self._level_lines + self._threshold_lines:
                line.setVisible(False)
            self.trace.setTitle("click a spot to see its refined states")
            return
        trace = model.trace(spot, max_points=10**9)
        n = min(len(trace.x), snapshot.n_frames)
        x, y = trace.x[:n], trace.intensity[:n]
        first = len(x) and int(x[0])
        states = snapshot.states[spot, first : first + n]
        step = max(1, n // _MAX_POINTS)
        for state, item in self._trace_points.items():
            sel = np.flatnonzero(states == state)[::step]
            item.setData(x[sel], y[sel])
        levels = snapshot.levels[spot]
        for line, value in zip(self._level_lines, (levels[0], levels[1], levels[2])):
            line.setVisible(bool(np.isfinite(value)))
            if np.isfinite(value):
                line.setValue(float(value))
        for line, value in zip(self._threshold_lines, snapshot.thresholds[spot]):
            line.setVisible(bool(np.isfinite(value)))
            if np.isfinite(value):
                line.setValue(float(value))
        self.trace.setTitle(f"spot {spot}: refined states (lines: levels; dotted/dashed: OFF/ON thresholds)")


_DOT = pg.QtCore.Qt.PenStyle.DotLine
_DASH = pg.QtCore.Qt.PenStyle.DashLine
