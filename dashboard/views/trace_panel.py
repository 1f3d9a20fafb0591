"""The trace panel: intensity traces of the selected spots with their on/off state, and the spot list."""

from __future__ import annotations

import logging

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from plstream.dashboard._numeric import run_outline
from plstream.dashboard.model import DashboardModel, SpotMetrics
from plstream.dashboard.views._time_plot import plot_points, set_time_axis

__all__ = ["SpotTableModel", "TracePanel"]

logger = logging.getLogger(__name__)

_COLUMNS = ("ID", "Brightness", "Switches", "ON %", "x", "y")
_DISPLAY = QtCore.Qt.ItemDataRole.DisplayRole.value
_TOOLTIP = QtCore.Qt.ItemDataRole.ToolTipRole.value
_DECORATION = QtCore.Qt.ItemDataRole.DecorationRole.value
_ALIGNMENT = QtCore.Qt.ItemDataRole.TextAlignmentRole.value
_RIGHT = (QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter).value
_TOOLTIPS = (
    "spot ID (as in the result file)",
    "median intensity over ON frames, photons",
    "number of on↔off switches",
    "fraction of measured frames that are ON",
    "x (column) in the reference frame, px",
    "y (row) in the reference frame, px",
)


class SpotTableModel(QtCore.QAbstractTableModel):
    """The spot list: one row per spot, sortable by any column (NaN last)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._columns: list[np.ndarray] = [np.zeros(0)] * len(_COLUMNS)
        self._text: list[list[str]] = [[] for _ in _COLUMNS]
        self._order = np.zeros(0, np.int64)
        self._sort = (1, QtCore.Qt.SortOrder.DescendingOrder)
        self._colors: dict[int, QtGui.QColor] = {}

    def set_metrics(self, metrics: SpotMetrics) -> None:
        """Take new metrics (keeps the current sort, and the selection on the same spots)."""
        n = len(metrics.x)
        columns = [
            np.arange(n, dtype=np.float64),
            metrics.brightness,
            metrics.switches.astype(np.float64),
            100.0 * metrics.on_fraction,
            metrics.x,
            metrics.y,
        ]
        self._text = [_format(values, column) for column, values in enumerate(columns)]
        if n == len(self._order):
            self._columns = columns
            self._relayout(self._sorted_order(*self._sort))
            return
        self.beginResetModel()
        self._columns = columns
        self._order = self._sorted_order(*self._sort)
        self.endResetModel()

    def _relayout(self, order: np.ndarray) -> None:
        """Reorder the rows, moving persistent indexes (the view's selection) with their spots."""
        self.layoutAboutToBeChanged.emit()
        row_of_spot = np.empty(len(order), np.int64)
        row_of_spot[order] = np.arange(len(order))
        old = self.persistentIndexList()
        new = [self.index(int(row_of_spot[self._order[i.row()]]), i.column()) for i in old]
        self._order = order
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def set_colors(self, colors: dict[int, QtGui.QColor]) -> None:
        """Colour swatches of the selected spots (their trace colours)."""
        self._colors = dict(colors)
        if len(self._order):
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._order) - 1, 0))

    def spot_at(self, row: int) -> int:
        """Spot ID shown in ``row``."""
        return int(self._order[row])

    def row_of(self, spot: int) -> int:
        """Row showing ``spot`` (-1 if absent)."""
        rows = np.flatnonzero(self._order == spot)
        return int(rows[0]) if len(rows) else -1

    def _sorted_order(self, column: int, order: QtCore.Qt.SortOrder) -> np.ndarray:
        values = self._columns[column]
        n = len(values)
        if n == 0:
            return np.zeros(0, np.int64)
        key = np.where(np.isfinite(values), values, np.inf if order == QtCore.Qt.SortOrder.AscendingOrder else -np.inf)
        idx = np.argsort(key, kind="stable")
        return idx[::-1].copy() if order == QtCore.Qt.SortOrder.DescendingOrder else idx

    # Qt model interface
    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._order)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(_COLUMNS)

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = 0) -> object:
        if orientation == QtCore.Qt.Orientation.Horizontal:
            role = getattr(role, "value", role)
            if role == _DISPLAY:
                return _COLUMNS[section]
            if role == _TOOLTIP:
                return _TOOLTIPS[section]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = 0) -> object:
        # Called for every visible cell and role at each paint: keep it to list lookups.
        role = getattr(role, "value", role)
        if role == _DISPLAY:
            return self._text[index.column()][self._order[index.row()]]
        if role == _DECORATION and index.column() == 0:
            return self._colors.get(int(self._order[index.row()]))
        if role == _ALIGNMENT and index.column() > 0:
            return _RIGHT
        return None

    def sort(self, column: int, order: QtCore.Qt.SortOrder = QtCore.Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (int(column), order)
        self._relayout(self._sorted_order(int(column), order))


def _format(values: np.ndarray, column: int) -> list[str]:
    """Display strings of one column ("—" for NaN)."""
    pattern = "{:.0f}" if column in (0, 2) else "{:,.0f}" if column == 1 else "{:.1f}"
    return [pattern.format(v) if np.isfinite(v) else "—" for v in values.tolist()]


class TracePanel(QtWidgets.QWidget):
    """Traces of the selected spots (one colour each) over a shaded on/off band, and the spot list.

    Only selected spots are drawn; each trace is clipped to the visible x
    range and peak-decimated to about twice the plot's width in pixels.

    Signals
    -------
    selection_requested(list)
        The user picked spots in the list (their IDs, in list order).
    """

    selection_requested = QtCore.Signal(list)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.x_axis = "frames"
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        layout.addWidget(splitter)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("left", "intensity", units="photons")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextSize="9pt")
        splitter.addWidget(self.plot)
        self.table = QtWidgets.QTableView()
        self.table_model = SpotTableModel(self.table)
        self.table.setModel(self.table_model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, QtCore.Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)  # ResizeToContents reads every row
        header.setStretchLastSection(False)
        header.setResizeContentsPrecision(64)
        self._sized_for = -1
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection)
        splitter.addWidget(self.table)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([700, 300])
        self._curves: dict[int, tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}
        self._drawn: tuple = ()
        self._metrics: SpotMetrics | None = None
        self._syncing = False
        self._range_dirty = False
        self.plot.getViewBox().sigXRangeChanged.connect(self._on_x_range)
        set_time_axis(self.plot, self.x_axis)

    # ------------------------------------------------------------------ public
    def set_x_axis(self, x_axis: str) -> None:
        """Frames or seconds on the x axis."""
        if x_axis != self.x_axis:
            self.x_axis = x_axis
            set_time_axis(self.plot, x_axis)
            self.plot.enableAutoRange(axis="x")

    def curve_data(self, spot: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) drawn for a selected spot's trace (empty arrays if it is not drawn)."""
        if spot not in self._curves:
            return np.zeros(0), np.zeros(0)
        x, y = self._curves[spot][0].getData()
        return (np.zeros(0), np.zeros(0)) if x is None else (x, y)

    def update_metrics(self, metrics: SpotMetrics, colors: dict[int, QtGui.QColor]) -> None:
        """Refresh the spot list (call at ≤1 Hz) and re-mark the selection in it."""
        if metrics is not self._metrics:
            self._metrics = metrics
            self._syncing = True  # a model reset clears the view's selection: not the user's doing
            try:
                self.table_model.set_metrics(metrics)
            finally:
                self._syncing = False
            if len(metrics.x) != self._sized_for:  # fit the columns once per spot count, not per paint
                self._sized_for = len(metrics.x)
                self.table.resizeColumnsToContents()
                swatch = self.table.style().pixelMetric(QtWidgets.QStyle.PixelMetric.PM_SmallIconSize) + 8
                self.table.setColumnWidth(0, self.table.columnWidth(0) + swatch)  # room for the colour swatch
                width = self.table.horizontalHeader().length() + self.table.verticalScrollBar().sizeHint().width()
                self.table.setMinimumWidth(min(width + 2 * self.table.frameWidth() + 4, 520))
        self.table_model.set_colors(colors)
        self._sync_table(list(colors))

    def update_view(self, model: DashboardModel, colors: dict[int, QtGui.QColor], *, force: bool = False) -> bool:
        """Redraw the traces if rows, selection, axis or visible range changed; returns whether it drew."""
        view = self.plot.getViewBox()
        max_points = plot_points(self.plot)
        selection = tuple((s, c.name()) for s, c in colors.items())
        key = (model.rows_version, model.session_count, self.x_axis, selection, max_points)
        if key == self._drawn and not force and not self._range_dirty:
            return False
        self._range_dirty = False
        self._drawn = key
        for spot in [s for s in self._curves if s not in colors or s >= model.n_spots]:
            for item in self._curves.pop(spot):
                self.plot.removeItem(item)
            self.legend.removeItem(f"#{spot}")
        auto_x = bool(view.autoRangeEnabled()[0])
        x_range = None if auto_x else tuple(view.viewRange()[0])
        metrics = self._metrics
        for spot, color in colors.items():
            if spot >= model.n_spots:
                continue
            trace = model.trace(spot, self.x_axis, max_points, x_range)
            curve, band = self._curves.get(spot) or self._new_curves(spot, color)
            level = self._on_level(spot, trace.intensity, metrics)
            band.setData(*run_outline(trace.x, np.nan_to_num(trace.on, nan=0.0) * np.float32(level)))
            curve.setData(trace.x, trace.intensity)
        return True

    # ------------------------------------------------------------------ helpers
    def _new_curves(self, spot: int, color: QtGui.QColor) -> tuple[pg.PlotDataItem, pg.PlotDataItem]:
        fill = QtGui.QColor(color)
        fill.setAlpha(45)
        band = pg.PlotDataItem(pen=None, fillLevel=0.0, brush=fill)
        curve = pg.PlotDataItem(
            pen=pg.mkPen(color, width=1),
            name=f"#{spot}",
            connect="finite",
            clipToView=True,
            autoDownsample=True,
            downsampleMethod="peak",
        )
        band.setZValue(-1)
        self.plot.addItem(band)
        self.plot.addItem(curve)
        self._curves[spot] = (curve, band)
        return curve, band

    @staticmethod
    def _on_level(spot: int, intensity: np.ndarray, metrics: SpotMetrics | None) -> float:
        """Height of the ON band: the spot's median ON intensity (else the trace's 90th percentile)."""
        if metrics is not None and spot < len(metrics.brightness) and np.isfinite(metrics.brightness[spot]):
            return float(metrics.brightness[spot])
        finite = intensity[np.isfinite(intensity)]
        return float(np.percentile(finite, 90)) if finite.size else 1.0

    def _on_x_range(self, *_: object) -> None:
        if not self.plot.getViewBox().autoRangeEnabled()[0]:
            self._range_dirty = True

    def _sync_table(self, spots: list[int]) -> None:
        selection = QtCore.QItemSelection()
        for spot in spots:
            row = self.table_model.row_of(spot)
            if row >= 0:
                selection.select(self.table_model.index(row, 0), self.table_model.index(row, len(_COLUMNS) - 1))
        self._syncing = True
        try:
            self.table.selectionModel().select(selection, QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect)
        finally:
            self._syncing = False

    def _on_table_selection(self, *_: object) -> None:
        if self._syncing:
            return
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        self.selection_requested.emit([self.table_model.spot_at(row) for row in rows])
