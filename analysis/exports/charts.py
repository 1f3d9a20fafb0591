"""Small, dependency-free charts for reports: line and scatter plots and tables drawn with OpenCV.

plstream does not depend on a plotting library; these few primitives draw
what the validation report needs (axes with ticks and a grid, lines with
markers, a legend, a table) onto a white canvas saved as PNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = ["COLORS", "Axes", "Canvas"]

# BGR, a colour-blind-friendly cycle (Okabe-Ito)
COLORS = ((178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (233, 180, 86), (66, 228, 240), (0, 0, 0))
RED, GREEN, GREY, BLACK = (40, 40, 200), (60, 150, 40), (200, 200, 200), (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _nice_step(span: float, target: int = 6) -> float:
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def _label(value: float, step: float) -> str:
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


class Canvas:
    """A white image to draw on (BGR, uint8)."""

    def __init__(self, width: int, height: int) -> None:
        self.image = np.full((height, width, 3), 255, dtype=np.uint8)

    def text(
        self,
        s: str,
        x: float,
        y: float,
        *,
        scale: float = 0.55,
        color: tuple[int, int, int] = BLACK,
        thickness: int = 1,
        align: str = "left",
        valign: str = "baseline",
    ) -> None:
        """Text at (x, y) px; ``align`` left/centre/right, ``valign`` baseline/middle/top."""
        (w, h), _ = cv2.getTextSize(s, _FONT, scale, thickness)
        dx = {"left": 0, "centre": -w / 2, "right": -w}[align]
        dy = {"baseline": 0, "middle": h / 2, "top": h}[valign]
        cv2.putText(
            self.image, s, (int(round(x + dx)), int(round(y + dy))), _FONT, scale, color, thickness, cv2.LINE_AA
        )

    def vertical_text(self, s: str, x: float, y: float, *, scale: float = 0.55) -> None:
        """Text rotated by 90 degrees (reading upwards), centred on (x, y)."""
        (w, h), base = cv2.getTextSize(s, _FONT, scale, 1)
        flat = np.full((h + base + 4, w + 4, 3), 255, dtype=np.uint8)
        cv2.putText(flat, s, (2, h + 2), _FONT, scale, BLACK, 1, cv2.LINE_AA)
        patch = np.asarray(cv2.rotate(flat, cv2.ROTATE_90_COUNTERCLOCKWISE))
        ph, pw = patch.shape[:2]
        r0, c0 = int(y - ph / 2), int(x - pw / 2)
        r0, c0 = max(0, r0), max(0, c0)
        region = self.image[r0 : r0 + ph, c0 : c0 + pw]
        np.minimum(region, patch[: region.shape[0], : region.shape[1]], out=region)

    def table(
        self,
        rows: Sequence[Sequence[str]],
        x: int,
        y: int,
        col_widths: Sequence[int],
        *,
        row_height: int = 30,
        title: str = "",
    ) -> None:
        """A table whose first row is the header (dark, white text), rows shaded alternately."""
        if title:
            self.text(title, x + sum(col_widths) / 2, y - 12, scale=0.65, thickness=2, align="centre")
        for i, row in enumerate(rows):
            top = y + i * row_height
            fill = (110, 70, 64) if i == 0 else ((240, 240, 240) if i % 2 == 0 else (255, 255, 255))
            cv2.rectangle(self.image, (x, top), (x + sum(col_widths), top + row_height), fill, -1)
            left = x
            for cell, width in zip(row, col_widths):
                color = (255, 255, 255) if i == 0 else BLACK
                self.text(
                    str(cell), left + width / 2, top + row_height / 2, color=color, align="centre", valign="middle"
                )
                left += width
            cv2.rectangle(self.image, (x, top), (x + sum(col_widths), top + row_height), GREY, 1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if not cv2.imwrite(str(path), self.image):
            raise OSError(f"could not write the image {path}")
        return path


@dataclass
class Axes:
    """One plot in a rectangle of a canvas: set the data, then :meth:`draw`.

    Parameters
    ----------
    canvas : Canvas
    x, y, width, height : int
        The plot area (inside the axis labels), px.
    """

    canvas: Canvas
    x: int
    y: int
    width: int
    height: int
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    equal: bool = False
    _series: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], str, bool, int, bool]] = field(
        default_factory=list
    )
    _marks: list[tuple[float, float, tuple[int, int, int], str]] = field(default_factory=list)

    def plot(
        self,
        xs: Sequence[float] | np.ndarray,
        ys: Sequence[float] | np.ndarray,
        color: tuple[int, int, int],
        label: str = "",
        *,
        line: bool = True,
        thickness: int = 2,
        dashed: bool = False,
    ) -> None:
        """A series of points, joined by a line (NaN breaks it)."""
        self._series.append(
            (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), color, label, line, thickness, dashed)
        )

    def star(self, x: float, y: float, color: tuple[int, int, int] = BLACK, label: str = "") -> None:
        """A star marker (e.g. the start point)."""
        self._marks.append((x, y, color, label))

    def _limits(self) -> tuple[float, float, float, float]:
        xs = np.concatenate([s[0] for s in self._series] + [np.array([m[0] for m in self._marks])])
        ys = np.concatenate([s[1] for s in self._series] + [np.array([m[1] for m in self._marks])])
        good = np.isfinite(xs) & np.isfinite(ys)
        if not good.any():
            return 0.0, 1.0, 0.0, 1.0
        x0, x1, y0, y1 = xs[good].min(), xs[good].max(), ys[good].min(), ys[good].max()
        pad_x, pad_y = max(0.05 * (x1 - x0), 1e-3), max(0.08 * (y1 - y0), 1e-3)
        x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
        if self.equal:  # the same px per unit on both axes
            sx, sy = (x1 - x0) / self.width, (y1 - y0) / self.height
            if sx > sy:
                mid, half = 0.5 * (y0 + y1), 0.5 * sx * self.height
                y0, y1 = mid - half, mid + half
            else:
                mid, half = 0.5 * (x0 + x1), 0.5 * sy * self.width
                x0, x1 = mid - half, mid + half
        return x0, x1, y0, y1

    def draw(self) -> None:
        img = self.canvas.image
        x0, x1, y0, y1 = self._limits()

        def px(u: float, v: float) -> tuple[int, int]:
            return (
                int(round(self.x + (u - x0) / (x1 - x0) * self.width)),
                int(round(self.y + self.height - (v - y0) / (y1 - y0) * self.height)),
            )

        cv2.rectangle(img, (self.x, self.y), (self.x + self.width, self.y + self.height), (255, 255, 255), -1)
        for axis, (lo, hi) in (("x", (x0, x1)), ("y", (y0, y1))):
            step = _nice_step(hi - lo)
            value = math.ceil(lo / step) * step
            while value <= hi + 1e-12:
                if axis == "x":
                    p = px(value, y0)
                    cv2.line(img, (p[0], self.y), (p[0], self.y + self.height), (230, 230, 230), 1)
                    self.canvas.text(_label(value, step), p[0], self.y + self.height + 20, scale=0.45, align="centre")
                else:
                    p = px(x0, value)
                    cv2.line(img, (self.x, p[1]), (self.x + self.width, p[1]), (230, 230, 230), 1)
                    self.canvas.text(_label(value, step), self.x - 6, p[1], scale=0.45, align="right", valign="middle")
                value += step
        for u, v in ((0.0, None), (None, 0.0)):  # the axes through 0, dashed, when in view
            if u is not None and x0 < u < x1:
                p = px(u, y0)
                for yy in range(self.y, self.y + self.height, 8):
                    cv2.line(img, (p[0], yy), (p[0], min(yy + 4, self.y + self.height)), (150, 150, 150), 1)
            if v is not None and y0 < v < y1:
                p = px(x0, v)
                for xx in range(self.x, self.x + self.width, 8):
                    cv2.line(img, (xx, p[1]), (min(xx + 4, self.x + self.width), p[1]), (150, 150, 150), 1)
        cv2.rectangle(img, (self.x, self.y), (self.x + self.width, self.y + self.height), BLACK, 1)
        clip = (self.x, self.y, self.width + 1, self.height + 1)
        for xs, ys, color, _, line, thickness, dashed in self._series:
            points = [px(u, v) if math.isfinite(u) and math.isfinite(v) else None for u, v in zip(xs, ys)]
            if line:
                for a, b in itertools.pairwise(points):
                    if a is not None and b is not None:
                        ok, a2, b2 = cv2.clipLine(clip, a, b)
                        if ok and not dashed:
                            cv2.line(img, a2, b2, color, thickness, cv2.LINE_AA)
                        elif ok:
                            n = max(1, int(math.hypot(b2[0] - a2[0], b2[1] - a2[1]) / 6))
                            for i in range(0, n, 2):
                                p1 = (a2[0] + (b2[0] - a2[0]) * i // n, a2[1] + (b2[1] - a2[1]) * i // n)
                                p2 = (a2[0] + (b2[0] - a2[0]) * (i + 1) // n, a2[1] + (b2[1] - a2[1]) * (i + 1) // n)
                                cv2.line(img, p1, p2, color, thickness, cv2.LINE_AA)
            for point in points:
                if point is None:
                    continue
                if self.x <= point[0] <= self.x + self.width and self.y <= point[1] <= self.y + self.height:
                    cv2.circle(img, point, 4, color, -1, cv2.LINE_AA)
        for u, v, color, _ in self._marks:
            p = px(u, v)
            cv2.drawMarker(img, p, color, cv2.MARKER_STAR, 22, 2, cv2.LINE_AA)
        if self.title:
            self.canvas.text(self.title, self.x + self.width / 2, self.y - 12, scale=0.65, thickness=2, align="centre")
        if self.xlabel:
            self.canvas.text(self.xlabel, self.x + self.width / 2, self.y + self.height + 45, align="centre")
        if self.ylabel:
            self.canvas.vertical_text(self.ylabel, self.x - 62, self.y + self.height / 2)
        labels = [(s[3], s[2], s[4]) for s in self._series if s[3]] + [(m[3], m[2], False) for m in self._marks if m[3]]
        if labels:
            width = 24 + max(cv2.getTextSize(t, _FONT, 0.45, 1)[0][0] for t, _, _ in labels)
            left, top = self.x + self.width - width - 10, self.y + 10
            cv2.rectangle(img, (left - 6, top - 4), (left + width, top + 20 * len(labels)), (255, 255, 255), -1)
            cv2.rectangle(img, (left - 6, top - 4), (left + width, top + 20 * len(labels)), GREY, 1)
            for i, (t, color, line) in enumerate(labels):
                yy = top + 8 + 20 * i
                if line:
                    cv2.line(img, (left, yy), (left + 16, yy), color, 2, cv2.LINE_AA)
                cv2.circle(img, (left + 8, yy), 4, color, -1, cv2.LINE_AA)
                self.canvas.text(t, left + 22, yy, scale=0.45, valign="middle")
