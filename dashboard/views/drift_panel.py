"""The drift panel: the stage drift dx, dy against frame or time."""

from __future__ import annotations

import pyqtgraph as pg
from pyqtgraph.Qt import QtWidgets

from plstream.dashboard.model import DashboardModel
from plstream.dashboard.views._time_plot import plot_points, set_time_axis

__all__ = ["DriftPanel"]


class DriftPanel(QtWidgets.QWidget):
    """dx and dy (px) of every frame: where a reference-frame point appears in that frame.

    Peak-decimated to about twice the plot's width. Rotation is not measured
    by the analyzer, so it is not shown.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.x_axis = "frames"
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("left", "drift", units="px")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.addLegend(offset=(-10, 10), labelTextSize="9pt")
        layout.addWidget(self.plot)
        common = {"clipToView": True, "autoDownsample": True, "downsampleMethod": "peak", "skipFiniteCheck": True}
        self.dx_curve = self.plot.plot(pen=pg.mkPen((255, 120, 90), width=1), name="dx (columns)", **common)
        self.dy_curve = self.plot.plot(pen=pg.mkPen((90, 170, 255), width=1), name="dy (rows)", **common)
        self._drawn: tuple = ()
        self._pixel_size_um: float | None = None
        set_time_axis(self.plot, self.x_axis)

    def set_x_axis(self, x_axis: str) -> None:
        """Frames or seconds on the x axis."""
        if x_axis != self.x_axis:
            self.x_axis = x_axis
            set_time_axis(self.plot, x_axis)
            self.plot.enableAutoRange(axis="x")

    def update_view(self, model: DashboardModel, *, force: bool = False) -> bool:
        """Redraw when rows or the axis changed; returns whether it drew."""
        max_points = plot_points(self.plot)
        key = (model.rows_version, model.session_count, self.x_axis, max_points)
        if key == self._drawn and not force:
            return False
        self._drawn = key
        self._show_micrometres(model.pixel_size_um)
        x, dx, dy = model.drift(self.x_axis, max_points)
        self.dx_curve.setData(x, dx)
        self.dy_curve.setData(x, dy)
        return True

    def _show_micrometres(self, pixel_size_um: float | None) -> None:
        """A right axis in µm beside the px axis when the pixel size is known."""
        if pixel_size_um == self._pixel_size_um:
            return
        self._pixel_size_um = pixel_size_um
        if pixel_size_um is None:
            self.plot.hideAxis("right")
            return
        right = self.plot.getAxis("right")
        right.setScale(pixel_size_um * 1e-6)  # px -> m; pyqtgraph shows it with an SI prefix (µm)
        self.plot.setLabel("right", "drift", units="m")
        self.plot.showAxis("right")
