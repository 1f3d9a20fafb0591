"""The image panel: latest frame or drift-corrected mean, with a marker and ID on every spot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from plstream.dashboard.model import DashboardModel, robust_levels, spot_map

__all__ = ["IMAGE_MODES", "ImagePanel"]

logger = logging.getLogger(__name__)

IMAGE_MODES = ("latest", "mean")
"""What the panel shows: the latest frame (spots shifted by its drift) or the drift-corrected mean."""

_SPOT_PEN = pg.mkPen((0, 230, 255, 200), width=1)
_LABEL_COLOR = (220, 240, 255)


class ImagePanel(QtWidgets.QWidget):
    """Image, spot circles (one ScatterPlotItem) and ID labels; clicking a circle selects the spot.

    Colour levels are fixed between recomputations from robust percentiles
    (at most every ``levels_interval_s``), so a live image does not flicker.
    Labels are drawn only while at most ``label_limit`` spots are in view.

    Parameters
    ----------
    label_limit : int
        Most spot labels drawn at once (zoom in to see more).
    levels_interval_s : float
        Shortest time between two level recomputations, s.
    clock : callable returning seconds
        Monotonic clock.

    Signals
    -------
    spot_clicked(int, bool)
        A spot's circle was clicked; the flag says shift or ctrl was held (add to the selection).
    """

    spot_clicked = QtCore.Signal(int, bool)

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        label_limit: int = 300,
        levels_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parent)
        self.label_limit = int(label_limit)
        self.levels_interval_s = float(levels_interval_s)
        self._clock = clock
        self.mode = "mean"
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.caption = QtWidgets.QLabel("No image yet")
        layout.addWidget(self.caption)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        layout.addWidget(self.plot, 1)
        self.view = self.plot.getViewBox()
        self.view.setAspectLocked(True)
        self.view.invertY(True)  # row 0 at the top, as in the camera image
        self.plot.setLabel("bottom", "x (column)", units="px")
        self.plot.setLabel("left", "y (row)", units="px")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setLookupTable(pg.colormap.get("inferno").getLookupTable(nPts=256))
        self.plot.addItem(self.image_item)
        # pxMode: symbols come from pyqtgraph's pixmap atlas (fast); the size follows the zoom (see _fit_marker_size)
        self.scatter = pg.ScatterPlotItem(pxMode=True, symbol="o", brush=None, pen=_SPOT_PEN, size=8.0)
        self._marker_px = 8.0
        self._marker_data = 6.0
        self.scatter.setZValue(10)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.plot.addItem(self.scatter)
        self._labels: list[pg.TextItem] = []
        self._levels: dict[str, tuple[float, float]] = {}
        self._levels_at: dict[str, float] = {}
        self._image_key: tuple[str, int, int] | tuple[()] = ()  # (kind, version, session) of the image shown
        self._spots_key: tuple = ()
        self._spot_xy = np.zeros((0, 2))
        self._labels_dirty = True
        self._fallback: tuple[int, np.ndarray] | None = None
        self.scale_bar: pg.ScaleBar | None = None
        self._scale_key: tuple[float, int] | None = None
        self.view.sigRangeChanged.connect(self._on_range_changed)

    # ------------------------------------------------------------------ public
    def set_mode(self, mode: str) -> None:
        """Show the latest frame ("latest") or the drift-corrected mean ("mean")."""
        if mode not in IMAGE_MODES:
            raise ValueError(f"image mode must be one of {', '.join(IMAGE_MODES)}; got {mode!r}")
        self.mode = mode

    @property
    def n_markers(self) -> int:
        """Spot circles drawn."""
        return len(self.scatter.data)

    @property
    def spot_xy(self) -> np.ndarray:
        """(S, 2) [x, y] px where the circles are drawn (shifted by the drift on the latest frame)."""
        return self._spot_xy.copy()

    @property
    def levels(self) -> tuple[float, float] | None:
        """Colour levels (low, high) of the image shown (None before the first image)."""
        if not self._image_key:
            return None
        return self._levels.get(self._image_key[0])

    @property
    def n_labels(self) -> int:
        """Spot ID labels visible."""
        return sum(1 for label in self._labels if label.isVisible())

    def update_view(self, model: DashboardModel, selected: dict[int, QtGui.QColor], *, force: bool = False) -> bool:
        """Redraw what changed since the last call; returns whether anything was drawn."""
        image, kind, frame, version = self._pick_image(model)
        if kind == "latest":
            dx, dy = model.drift_at(frame)
        else:
            dx = dy = 0.0
        image_key = (kind, version, model.session_count)
        selection = tuple((spot, color.name()) for spot, color in selected.items())
        spots_key = (model.spots_version, model.session_count, round(dx, 3), round(dy, 3), selection)
        drew = False
        if image is not None and (force or image_key != self._image_key):
            self._show_image(image, kind, frame)
            self._image_key = image_key
            drew = True
        if image is not None:
            self._show_scale_bar(model.pixel_size_um, int(image.shape[1]))
        if force or spots_key != self._spots_key:
            self._show_spots(model, dx, dy, selected)
            self._spots_key = spots_key
            self._labels_dirty = drew = True
        if self._labels_dirty:
            self._show_labels()
            drew = True
        return drew

    # ------------------------------------------------------------------ drawing
    def _pick_image(self, model: DashboardModel) -> tuple[np.ndarray | None, str, int, int]:
        """(image, kind, frame, version) for the current mode, falling back to what exists."""
        images = model.images()
        latest = (images["latest"][0], "latest", images["latest"][1], images["latest"][2])
        mean = (images["mean"][0], "mean", images["mean"][1] - 1, images["mean"][2])
        order = (latest, mean) if self.mode == "latest" else (mean, latest)
        for candidate in order:
            if candidate[0] is not None:
                return candidate
        shape = model.image_shape()
        if shape is None or model.n_spots == 0:
            return None, "none", -1, -1
        if self._fallback is None or self._fallback[0] != model.spots_version:
            metrics = model.metrics()
            sigma = float(model.info.get("psf_sigma_px") or 1.3)
            self._fallback = (model.spots_version, spot_map(shape, metrics.x, metrics.y, metrics.brightness, sigma))
        return self._fallback[1], "map", -1, model.spots_version

    def _show_image(self, image: np.ndarray, kind: str, frame: int) -> None:
        now = self._clock()
        if kind not in self._levels or now - self._levels_at.get(kind, -np.inf) >= self.levels_interval_s:
            self._levels[kind] = robust_levels(image)
            self._levels_at[kind] = now
        data = image if image.dtype in (np.uint8, np.uint16, np.float32) else image.astype(np.float32)
        rect_changed = self.image_item.image is None or self.image_item.image.shape != data.shape
        self.image_item.setImage(np.ascontiguousarray(data), levels=self._levels[kind], autoLevels=False)
        if rect_changed:
            rows, cols = data.shape[:2]
            self.image_item.setRect(QtCore.QRectF(-0.5, -0.5, cols, rows))  # pixel centres at integers
            self.view.autoRange(padding=0.01)
        lo, hi = self._levels[kind]
        text = {
            "latest": f"Latest frame #{frame:,}",
            "mean": f"Drift-corrected mean ({frame + 1:,} frames)",
            "map": "Spot map (no image in the source): one Gaussian per spot, scaled by brightness",
        }[kind]
        self.caption.setText(f"{text}   ·   levels {lo:,.0f} – {hi:,.0f}")

    def _show_scale_bar(self, pixel_size_um: float | None, width_px: int) -> None:
        """A scale bar of a round length in µm (about a fifth of the image) when the pixel size is known."""
        key = None if pixel_size_um is None else (pixel_size_um, width_px)
        if key == self._scale_key:
            return
        self._scale_key = key
        if self.scale_bar is not None:
            self.scale_bar.setParentItem(None)
            self.plot.scene().removeItem(self.scale_bar)
            self.scale_bar = None
        if pixel_size_um is None:
            return
        length_um = round_length(width_px * pixel_size_um / 5)
        self.scale_bar = pg.ScaleBar(size=length_um / pixel_size_um, width=4, offset=(-20, -20))
        self.scale_bar.text.setText(f"{length_um:g} µm")
        self.scale_bar.setParentItem(self.view)

    def _show_spots(self, model: DashboardModel, dx: float, dy: float, selected: dict[int, QtGui.QColor]) -> None:
        xy = model.spot_positions(dx, dy)
        x, y = xy[:, 0], xy[:, 1]
        n = len(x)
        sigma = float(model.info.get("psf_sigma_px") or 1.3)
        self._marker_data = max(4.0, 5.0 * sigma)  # circle diameter in image px (about the aperture)
        pens = [_SPOT_PEN] * n
        for spot, color in selected.items():
            if spot < n:
                pens[spot] = pg.mkPen(color, width=2)
        self.scatter.setData(x=x, y=y, data=np.arange(n), size=self._marker_px, pen=pens, brush=None)
        self._spot_xy = xy

    def _fit_marker_size(self) -> float:
        """Set the circles' screen size to their size in image px at the current zoom; returns it."""
        per_px = self.view.viewPixelSize()[0] or 1.0
        size = float(np.clip(self._marker_data / per_px, 7.0, 120.0))
        if abs(size - self._marker_px) > 0.05 * self._marker_px:
            self._marker_px = size
            self.scatter.setSize(size)
        return size

    def _show_labels(self) -> None:
        self._labels_dirty = False
        size = self._fit_marker_size()
        (x0, x1), (y0, y1) = self.view.viewRange()
        xy = self._spot_xy
        inside: np.ndarray | list[int] = (
            np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)) if len(xy) else []
        )
        show = len(inside) <= self.label_limit
        wanted = inside if show else []
        while len(self._labels) < len(wanted):
            label = pg.TextItem(color=_LABEL_COLOR, anchor=(0.0, 1.0))
            label.setZValue(11)
            self.plot.addItem(label)
            self._labels.append(label)
        offset = 0.35 * size * (self.view.viewPixelSize()[0] or 1.0)
        for label, spot in zip(self._labels, wanted):
            label.setText(str(int(spot)))
            label.setPos(float(xy[spot, 0]) + offset, float(xy[spot, 1]) - offset)
            label.setVisible(True)
        for label in self._labels[len(wanted) :]:
            label.setVisible(False)

    # ------------------------------------------------------------------ events
    def _on_range_changed(self, *_: object) -> None:
        self._labels_dirty = True

    def _on_clicked(self, _item: pg.ScatterPlotItem, points: list, event: object) -> None:
        if not len(points):
            return
        pos = event.pos() if hasattr(event, "pos") else None
        best = points[0]
        if pos is not None and len(points) > 1:
            best = min(points, key=lambda p: (p.pos().x() - pos.x()) ** 2 + (p.pos().y() - pos.y()) ** 2)
        modifiers = event.modifiers() if hasattr(event, "modifiers") else QtCore.Qt.KeyboardModifier.NoModifier
        additive = bool(
            modifiers & (QtCore.Qt.KeyboardModifier.ShiftModifier | QtCore.Qt.KeyboardModifier.ControlModifier)
        )
        self.spot_clicked.emit(int(best.data()), additive)


def round_length(value: float) -> float:
    """The largest of 1, 2 or 5 × a power of ten that is at most ``value`` (a scale bar's length)."""
    if not value > 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    return float(max(step * power for step in (1.0, 2.0, 5.0) if step * power <= value))
