"""The dashboard window: image, traces, drift and stream health, redrawn by one timer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from plstream.dashboard.model import DashboardModel
from plstream.dashboard.views._qt_compat import refcount_guard
from plstream.dashboard.views.blinking_panel import BlinkingPanel
from plstream.dashboard.views.drift_panel import DriftPanel
from plstream.dashboard.views.health_panel import HealthPanel
from plstream.dashboard.views.image_panel import ImagePanel
from plstream.dashboard.views.trace_panel import TracePanel

__all__ = ["MAX_REDRAW_HZ", "DashboardWindow", "configure_pyqtgraph"]

logger = logging.getLogger(__name__)

MAX_REDRAW_HZ = 30.0
"""Upper bound of the redraw rate: faster starves interaction and buys nothing."""

_PALETTE = (
    (255, 215, 0),
    (0, 200, 255),
    (255, 95, 160),
    (120, 230, 90),
    (255, 140, 40),
    (180, 130, 255),
    (0, 230, 180),
    (255, 255, 255),
)
"""Distinct trace colours, assigned to selected spots in turn."""


class Feed(Protocol):
    """What the window needs of a feed (see :mod:`plstream.dashboard.feeds`)."""

    def stop(self, timeout_s: float = 5.0) -> None: ...


class DashboardWindow(QtWidgets.QMainWindow):
    """Image over drift | traces and spot list (or the blinking panel, in a second tab), under the health strip.

    One QTimer at ``redraw_hz`` (at most :data:`MAX_REDRAW_HZ`) redraws only
    what changed in the model; the spot list and metrics refresh at most
    once per ``metrics_interval_s``. The window never waits on the feed.

    Parameters
    ----------
    model : DashboardModel
        Filled by a feed from another thread.
    feed : object with ``stop()``, optional
        Stopped when the window closes.
    redraw_hz : float
        Redraw timer rate.
    metrics_interval_s : float
        Seconds between spot-list refreshes.
    max_cpu_fraction : float
        When this process has used more than this fraction of a core since the
        last tick (redraws, paints, the feed's work), the tick is skipped
        (at most 4 in a row), so a big view slows its own redraw rate, not the analysis.
    clock : callable returning seconds
        Monotonic clock.
    """

    def __init__(
        self,
        model: DashboardModel,
        feed: Feed | None = None,
        *,
        redraw_hz: float = 20.0,
        metrics_interval_s: float = 1.0,
        max_cpu_fraction: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if not redraw_hz > 0:
            raise ValueError(f"redraw_hz must be > 0, got {redraw_hz}")
        self.model = model
        self.feed = feed
        self.redraw_hz = min(float(redraw_hz), MAX_REDRAW_HZ)
        self.metrics_interval_s = float(metrics_interval_s)
        self._clock = clock
        self.max_cpu_fraction = float(max_cpu_fraction)
        self.cpu_fraction = 0.0
        """Smoothed CPU use of this process, cores (measured between timer ticks)."""
        self._cpu_mark = (clock(), time.process_time())
        self._skipped = 0
        self.redraw_count = 0
        """Timer ticks that drew something (for measuring the redraw rate)."""
        self._colors: dict[int, QtGui.QColor] = {}
        self._selection_dirty = True
        self._metrics_at = -float("inf")
        self._health_at = -float("inf")
        self._session = -1
        self._status_drawn = -1
        self._keep_alive = refcount_guard()  # a PySide6 6.12 defect on Python 3.11, see _qt_compat
        self._build()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, int(round(1000.0 / self.redraw_hz))))
        self.timer.timeout.connect(self._on_timer)
        self.timer.start()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.setWindowTitle(f"plstream dashboard — {self.model.source_name or 'no source'}")
        toolbar = self.addToolBar("View")
        toolbar.setMovable(False)
        self.image_mode = _add_choice(
            toolbar, "Image", {"Drift-corrected mean": "mean", "Latest frame": "latest"}, self.set_image_mode
        )
        self.x_axis_box = _add_choice(toolbar, "Time axis", {"Frames": "frames", "Seconds": "seconds"}, self.set_x_axis)
        clear = QtGui.QAction("Clear selection", self)
        clear.triggered.connect(lambda: self.set_selection([]))
        toolbar.addAction(clear)

        self.health_panel = HealthPanel()
        self.image_panel = ImagePanel()
        self.trace_panel = TracePanel()
        self.drift_panel = DriftPanel()
        self.blinking_panel = BlinkingPanel()
        self.image_panel.spot_clicked.connect(self._on_spot_clicked)
        self.trace_panel.selection_requested.connect(self.set_selection)

        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)  # the image is square: drift fills below it
        left.addWidget(self._titled("Image (click a spot; shift/ctrl-click adds)", self.image_panel))
        left.addWidget(self._titled("Drift (where a reference point appears in each frame)", self.drift_panel))
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        left.setSizes([660, 260])
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        main.addWidget(left)
        self.right_tabs = QtWidgets.QTabWidget()
        self.right_tabs.addTab(
            self._titled("Intensity traces (selected spots; shaded: ON)", self.trace_panel), "Traces"
        )
        self.right_tabs.addTab(
            self._titled(
                "Blinking: dwell times of all spots; the first selected spot's refined states", self.blinking_panel
            ),
            "Blinking",
        )
        main.addWidget(self.right_tabs)
        main.setStretchFactor(0, 2)
        main.setStretchFactor(1, 3)
        main.setSizes([620, 980])
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.health_panel)
        layout.addWidget(main, 1)
        self.setCentralWidget(central)

    @staticmethod
    def _titled(title: str, widget: QtWidgets.QWidget) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox(title)
        layout = QtWidgets.QVBoxLayout(box)
        layout.setContentsMargins(2, 6, 2, 2)
        layout.addWidget(widget)
        return box

    # ------------------------------------------------------------------ selection
    @property
    def selection(self) -> list[int]:
        """Selected spot IDs, in the order they were picked."""
        return list(self._colors)

    def set_selection(self, spots: list[int]) -> None:
        """Select exactly ``spots`` (IDs); their traces are drawn, each in its own colour."""
        wanted = list(dict.fromkeys(int(s) for s in spots))
        kept = {s: c for s, c in self._colors.items() if s in wanted}
        used = {c.name() for c in kept.values()}
        free = [QtGui.QColor(*rgb) for rgb in _PALETTE if QtGui.QColor(*rgb).name() not in used]
        for i, spot in enumerate(s for s in wanted if s not in kept):
            kept[spot] = free[i] if i < len(free) else QtGui.QColor(*_PALETTE[(len(kept) + i) % len(_PALETTE)])
        self._colors = {s: kept[s] for s in wanted}
        self._selection_dirty = True

    def select_brightest(self, n: int) -> list[int]:
        """Select the ``n`` brightest spots; returns their IDs."""
        spots = self.model.brightest(n)
        self.set_selection(spots)
        return spots

    def _on_spot_clicked(self, spot: int, additive: bool) -> None:
        if not additive:
            self.set_selection([spot])
        elif spot in self._colors:
            self.set_selection([s for s in self._colors if s != spot])
        else:
            self.set_selection([*self._colors, spot])

    # ------------------------------------------------------------------ view options
    def set_image_mode(self, mode: str) -> None:
        """ "latest" (latest frame, spots shifted by its drift) or "mean" (drift-corrected mean)."""
        self.image_panel.set_mode(mode)
        _show_choice(self.image_mode, mode)

    def set_x_axis(self, x_axis: str) -> None:
        """ "frames" or "seconds" (from the frames' timestamps) on the trace and drift plots."""
        self.trace_panel.set_x_axis(x_axis)
        self.drift_panel.set_x_axis(x_axis)
        _show_choice(self.x_axis_box, x_axis)

    # ------------------------------------------------------------------ drawing
    def _on_timer(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive()
        now, cpu = self._clock(), time.process_time()
        wall = now - self._cpu_mark[0]
        if wall > 0:
            self.cpu_fraction = 0.7 * self.cpu_fraction + 0.3 * (cpu - self._cpu_mark[1]) / wall
        self._cpu_mark = (now, cpu)
        if self.cpu_fraction > self.max_cpu_fraction and self._skipped < 4:
            self._skipped += 1
            return
        self._skipped = 0
        try:
            self.redraw()
        except Exception:
            logger.exception("dashboard redraw failed")

    def redraw(self, *, force: bool = False) -> bool:
        """Redraw what changed since the last redraw (everything with ``force``); returns whether it drew."""
        if self._keep_alive is not None:
            self._keep_alive()
        model, now = self.model, self._clock()
        drew = False
        if model.session_count != self._session:
            self._session = model.session_count  # a restarted analyzer: keep the selection, refresh the list
            self._selection_dirty = True
        if force or self._selection_dirty or now - self._metrics_at >= self.metrics_interval_s:
            self._metrics_at = now
            self.trace_panel.update_metrics(model.metrics(force=force), self._colors)
            self._selection_dirty = False
        drew |= self.image_panel.update_view(model, self._colors, force=force)
        drew |= self.trace_panel.update_view(model, self._colors, force=force)
        drew |= self.drift_panel.update_view(model, force=force)
        if force or self.right_tabs.currentIndex() == 1:
            drew |= self.blinking_panel.update_view(model, self._colors, force=force)
        # health last: it then shows a model at least as new as the panels drawn above (a feed may apply an
        # update between two reads of this redraw)
        if force or now - self._health_at >= 0.5 or model.status_version != self._status_drawn:
            self._status_drawn = model.status_version
            self._health_at = now
            self.health_panel.update_view(model.health())
            self.setWindowTitle(f"plstream dashboard — {model.source_name or 'no source'}")
        if drew:
            self.redraw_count += 1
        return drew

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.timer.stop()
        if self.feed is not None:
            self.feed.stop()
        super().closeEvent(event)


def _add_choice(
    toolbar: QtWidgets.QToolBar, label: str, items: dict[str, str], on_choice: Callable[[str], None]
) -> QtWidgets.QComboBox:
    """A labelled combo box of ``{text: value}`` on ``toolbar`` (then a separator); ``on_choice(value)`` on change."""
    toolbar.addWidget(QtWidgets.QLabel(f" {label}: "))
    box = QtWidgets.QComboBox()
    for text, value in items.items():
        box.addItem(text, value)
    box.currentIndexChanged.connect(lambda _i: on_choice(box.currentData()))
    toolbar.addWidget(box)
    toolbar.addSeparator()
    return box


def _show_choice(box: QtWidgets.QComboBox, value: str) -> None:
    """Point ``box`` at ``value`` (when set from code rather than by the user)."""
    index = box.findData(value)
    if index != box.currentIndex():
        box.setCurrentIndex(index)


def configure_pyqtgraph() -> None:
    """pyqtgraph options for live plots (process-wide; called by the app, not at import)."""
    pg.setConfigOptions(antialias=False, imageAxisOrder="row-major", background="k", foreground="w")
