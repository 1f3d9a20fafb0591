"""The dashboard's data model: growing buffers fed by live updates, without Qt.

A :class:`DashboardModel` holds everything a viewer has received from one
analyzer session (or one result file): per-frame rows, the spot table, the
latest and mean images, the status counters and the connection state. Feeds
(:mod:`plstream.dashboard.feeds`) call :meth:`DashboardModel.apply` from their
worker thread; the GUI timer reads traces, metrics and health from the GUI
thread. Every public method takes the model's lock, so both sides always see
a consistent state; none of them holds it for longer than a copy.

Conventions: T = frames held, S = spots; x = column, y = row, pixel centres at
integers; spots are in reference-frame coordinates; on the latest frame a spot
sits at (x + dx, y + dy) with that frame's drift.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from plstream.dashboard import _numeric
from plstream.dashboard._buffers import FrameBuffers
from plstream.dashboard._numeric import peak_decimate, robust_levels, spot_map
from plstream.dashboard._status import health_texts
from plstream.dashboard.blinking import BlinkingSnapshot, BlinkingTracker
from plstream.stream.live.messages import LiveRequest, LiveUpdate

__all__ = ["DashboardModel", "SpotMetrics", "TraceData", "peak_decimate", "robust_levels", "spot_map"]

logger = logging.getLogger(__name__)

X_AXES = ("frames", "seconds")
"""Units of a trace's x axis: frame index, or seconds since the first frame's timestamp."""


@dataclass(frozen=True)
class TraceData:
    """One spot's trace, ready to draw (peak-decimated when long).

    Attributes
    ----------
    spot : int
        Spot ID (column of the result file's per-spot datasets).
    x : (m,) float64
        Frame index or seconds, increasing.
    intensity : (m,) float32
        Photons; NaN where not measured. When decimated, each bin gives two
        points: its minimum and its maximum (blinks and spikes stay visible).
    on : (m,) float32
        1 on, 0 off, NaN not measured (when decimated: 1 if the bin holds any ON frame).
    decimated : bool
        Points are bin minima/maxima, not frames.
    """

    spot: int
    x: np.ndarray
    intensity: np.ndarray
    on: np.ndarray
    decimated: bool


@dataclass(frozen=True)
class SpotMetrics:
    """Per-spot summaries for sorting the spot list (arrays of length S).

    Attributes
    ----------
    brightness : float64
        Median intensity over ON frames, photons (NaN: never on). Exact up to
        ``metrics_sample_frames`` frames, estimated from evenly strided frames beyond.
    switches : int64
        Number of on<->off changes (unmeasured frames skipped).
    on_fraction : float64
        ON frames / measured frames (NaN: never measured).
    x, y : float64
        Reference-frame position, px.
    """

    brightness: np.ndarray
    switches: np.ndarray
    on_fraction: np.ndarray
    x: np.ndarray
    y: np.ndarray


class DashboardModel:
    """Growing per-frame buffers, the spot table, images, status and metrics of one session.

    Parameters
    ----------
    initial_frames, initial_spots : int
        Initial buffer capacity; each doubles when outgrown.
    clock : callable returning seconds
        Monotonic clock (injected so tests can step time).
    metrics_interval_s : float
        Spot metrics are recomputed at most this often (they are read at ≤1 Hz).
    metrics_sample_frames : int
        Frames used for the median ON intensity (strided beyond this).
    stall_s : float
        A running stream with no new frames for this long shows "Source stopped".

    Examples
    --------
    >>> model.apply(client.fetch(model.next_request(4096)))  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        initial_frames: int = 1024,
        initial_spots: int = 16,
        clock: Callable[[], float] = time.monotonic,
        metrics_interval_s: float = 1.0,
        metrics_sample_frames: int = 8192,
        stall_s: float = 5.0,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._initial = (max(1, int(initial_frames)), max(1, int(initial_spots)))
        self._metrics_interval_s = float(metrics_interval_s)
        self._metrics_sample = max(16, int(metrics_sample_frames))
        self.stall_s = float(stall_s)
        self.source_name = ""
        """What the feed reads (endpoint or file), for messages."""
        self.connected = False
        self._ever_connected = False
        self._connection_detail = ""
        self.session_count = 0
        """Sessions seen (a new session_id resets the model and increments this)."""
        self.data_version = 0
        """Increments whenever rows, spots, images or status change (the GUI redraws on change)."""
        self.rows_version = self.spots_version = self.status_version = 0
        self._x_cache: tuple[tuple[Any, ...], np.ndarray] | None = None  # (key, x_values) of the last call
        self._blinking = BlinkingTracker(self._rows_for_blinking, clock=clock)
        self._reset("")

    # ------------------------------------------------------------------ state
    def _reset(self, session_id: str) -> None:
        self.session_id = session_id
        self.info: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self._rows = FrameBuffers(*self._initial)
        self.spots_x = np.zeros(0, np.float64)
        self.spots_y = np.zeros(0, np.float64)
        self.spots_first_frame = np.zeros(0, np.int64)
        self.image: np.ndarray | None = None
        self.image_frame = -1
        self.image_version = -1
        self.mean_image: np.ndarray | None = None
        self.mean_version = -1
        self.rows_version += 1  # versions only grow, across sessions too
        self.spots_version += 1
        self.status_version += 1
        self.caught_up = False
        """The last update carried everything the server had (no ``more``)."""
        self._metrics: SpotMetrics | None = None
        self._metrics_at = -math.inf
        self._metrics_key: tuple[int, int] = (-1, -1)
        self._last_received = -1
        self._last_progress = self._clock()

    @property
    def n_frames(self) -> int:
        """T, frames held (rows 0..T-1)."""
        return self._rows.n_frames

    @property
    def n_spots(self) -> int:
        """S, spots known."""
        return self._rows.n_spots

    # ------------------------------------------------------------------ feeding
    def set_connection(self, connected: bool, detail: str = "") -> None:
        """Record whether the last request got an answer (called by the feed)."""
        with self._lock:
            if connected != self.connected or detail != self._connection_detail:
                self.status_version += 1
                self.data_version += 1
            self.connected = bool(connected)
            self._ever_connected |= self.connected
            self._connection_detail = detail

    def next_request(self, max_frames: int = 4096) -> LiveRequest:
        """The request that fetches what this model lacks: rows from :attr:`n_frames` on, newer images."""
        with self._lock:
            return LiveRequest(self.session_id, self.n_frames, self.image_version, self.mean_version, int(max_frames))

    def apply(self, update: LiveUpdate) -> bool:
        """Take in one update; returns whether anything shown changed.

        Rows go to ``update.first_frame`` onwards (rows already held are
        overwritten). An update from another session (``session_id``) first
        resets the model. An update that would leave a hole (it starts after
        :attr:`n_frames`) keeps its status and images but not its rows; the
        next request asks for the missing ones.
        """
        with self._lock:
            changed = False
            if update.session_id != self.session_id:
                if self.session_id:
                    logger.info("new analyzer session %s (was %s): reloading", update.session_id, self.session_id)
                self._reset(update.session_id)
                self.session_count += 1
                changed = True
            if update.info and update.info != self.info:
                self.info = dict(update.info)
                changed = True
            if update.status != self.status:
                self.status = dict(update.status)
                self.status_version += 1
                changed = True
            received = int(self.status.get("frames_received", 0) or 0)
            if received > self._last_received:
                self._last_received = received
                self._last_progress = self._clock()
            same = np.array_equal(update.spots_x, self.spots_x) and np.array_equal(update.spots_y, self.spots_y)
            if update.n_spots >= self.n_spots and not same:
                self._rows.set_spots(update.n_spots)
                self.spots_x = np.array(update.spots_x, np.float64)
                self.spots_y = np.array(update.spots_y, np.float64)
                self.spots_first_frame = np.array(update.spots_first_frame, np.int64)
                self.spots_version += 1
                changed = True
            if update.n_frames:
                changed |= self._apply_rows(update)
            if update.image is not None:
                self.image = np.ascontiguousarray(update.image)
                self.image_frame = int(update.image_frame)
                self.image_version = int(update.image_version)
                changed = True
            if update.mean_image is not None:
                self.mean_image = np.ascontiguousarray(update.mean_image, dtype=np.float32)
                self.mean_version = int(update.mean_version)
                changed = True
            self.caught_up = not update.more
            if changed:
                self.data_version += 1
            return changed

    def _apply_rows(self, update: LiveUpdate) -> bool:
        t0 = int(update.first_frame)
        if t0 > self.n_frames:
            logger.warning("update starts at frame %d but frames from %d are missing; re-requesting", t0, self.n_frames)
            return False
        self._rows.write(t0, update.seq, update.timestamp, update.drift_xy, update.intensity, update.state)
        self.rows_version += 1
        return True

    # ------------------------------------------------------------------ reading
    @property
    def pixel_size_um(self) -> float | None:
        """µm per pixel in the sample plane, when the run knows it (``info["pixel_size_um"]``)."""
        return _positive_or_none(self.info.get("pixel_size_um"))

    @property
    def frame_interval_s(self) -> float | None:
        """Seconds between frames, when the run knows it (``info["frame_interval_s"]``, else 1 / frame rate)."""
        interval = _positive_or_none(self.info.get("frame_interval_s"))
        rate = _positive_or_none(self.info.get("frame_rate_hz"))
        return interval if interval is not None else (1.0 / rate if rate is not None else None)

    def drift_at(self, frame: int) -> tuple[float, float]:
        """(dx, dy) px of ``frame`` (the last known drift when the frame is not held yet)."""
        with self._lock:
            if self.n_frames == 0:
                return 0.0, 0.0
            t = min(max(int(frame), 0), self.n_frames - 1)
            return float(self._rows.drift[t, 0]), float(self._rows.drift[t, 1])

    def x_values(self, x_axis: str = "frames") -> np.ndarray:
        """The x coordinate of every held frame: frame index, or seconds since the first timestamp.

        Timestamps that do not increase fall back to frames × :attr:`frame_interval_s`.
        The array is read-only and shared: it is computed once per rows version
        and axis, not once per trace drawn.
        """
        if x_axis not in X_AXES:
            raise ValueError(f"x_axis must be one of {', '.join(X_AXES)}; got {x_axis!r}")
        with self._lock:
            interval = self.frame_interval_s
            key = (self.rows_version, x_axis, interval)
            if self._x_cache is not None and self._x_cache[0] == key:
                return self._x_cache[1]
            n = self.n_frames
            x = np.arange(n, dtype=np.float64)
            if x_axis == "seconds" and n > 0:
                ts = self._rows.timestamp[:n]
                if n == 1 or (ts[-1] > ts[0] and np.all(np.diff(ts) >= 0)):
                    x = ts - ts[0]
                else:
                    x *= interval or 1.0
            x.setflags(write=False)
            self._x_cache = (key, x)
            return x

    def trace(
        self,
        spot: int,
        x_axis: str = "frames",
        max_points: int = 4000,
        x_range: tuple[float, float] | None = None,
    ) -> TraceData:
        """Spot ``spot``'s intensity and on/off state, clipped to ``x_range`` and peak-decimated.

        Parameters
        ----------
        spot : int
            Spot ID, 0 <= spot < S.
        x_axis : {"frames", "seconds"}
        max_points : int
            Most points returned (about twice the plot's width in pixels).
        x_range : (float, float), optional
            Visible x interval (same unit as ``x_axis``); frames outside it,
            but one on each side, are left out.
        """
        with self._lock:
            if not 0 <= spot < self.n_spots:
                raise IndexError(f"spot {spot} does not exist (spots 0..{self.n_spots - 1} are known)")
            x = self.x_values(x_axis)
            i0, i1 = int(self.spots_first_frame[spot]), self.n_frames
            if x_range is not None and len(x):
                lo = int(np.searchsorted(x, x_range[0], side="left")) - 1
                hi = int(np.searchsorted(x, x_range[1], side="right")) + 1
                i0, i1 = max(i0, lo, 0), min(i1, hi)
            i0 = min(max(i0, 0), i1)
            y = self._rows.intensity[spot, i0:i1].copy()
            st = self._rows.state[spot, i0:i1]
        on = np.where(st < 0, np.nan, st).astype(np.float32)
        index, y_out, on_out = peak_decimate(y, max_points, on)
        x_sel = x[i0:i1]
        return TraceData(spot, x_sel[index] if len(x_sel) else x_sel, y_out, on_out, len(y_out) != len(y))

    def drift(self, x_axis: str = "frames", max_points: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, dx, dy) of all held frames, peak-decimated (px)."""
        with self._lock:
            x = self.x_values(x_axis)
            dx = self._rows.drift[: self.n_frames, 0].copy()
            dy = self._rows.drift[: self.n_frames, 1].copy()
        index, dx_out, dy_out = peak_decimate(dx, max_points, dy, companion_mode="peak")
        return x[index], dx_out, dy_out

    def metrics(self, *, force: bool = False) -> SpotMetrics:
        """Per-spot brightness, switches and ON fraction (recomputed at most every ``metrics_interval_s``).

        The median is computed outside the lock (on a copy), so a feed or the GUI never waits for it.
        """
        with self._lock:
            now, key = self._clock(), (self.rows_version, self.spots_version)
            if self._metrics is not None and len(self._metrics.x) == self.n_spots:
                if key == self._metrics_key or (now - self._metrics_at < self._metrics_interval_s and not force):
                    return self._metrics
            on, measured, switches = self._rows.counts()
            s, n = self.n_spots, self.n_frames
            step = max(1, math.ceil(n / self._metrics_sample))
            intensity, state = self._rows.intensity[:s, :n:step].copy(), self._rows.state[:s, :n:step].copy()
            x, y = self.spots_x.copy(), self.spots_y.copy()
        on_fraction = np.full(s, np.nan)
        np.divide(on, measured, out=on_fraction, where=measured > 0)
        metrics = SpotMetrics(_numeric.median_where_on(intensity, state), switches, on_fraction, x, y)
        with self._lock:  # keep it even if newer rows came meanwhile: it is at most one interval old
            if self._metrics is None or key >= self._metrics_key:
                self._metrics, self._metrics_at, self._metrics_key = metrics, now, key
        return metrics

    def _rows_for_blinking(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        with self._lock:
            n, s = self.n_frames, self.n_spots
            if n == 0 or s == 0:
                return None
            return (
                self.rows_version,
                self._rows.seq[:n].copy(),
                self._rows.intensity[:s, :n].copy(),
                self._rows.state[:s, :n].copy(),
            )

    def blinking(self, *, wait: bool = False) -> BlinkingSnapshot | None:
        """The latest refined states and ensemble dwell-time distributions of the held rows (None: not yet).

        Computed in a background thread from the rows (see :mod:`plstream.dashboard.blinking`);
        a call starts a new computation when rows changed since the last one and it is time.
        ``wait`` waits for it (tests, screenshots).
        """
        with self._lock:
            version = self.rows_version
        return self._blinking.snapshot(version, wait=wait)

    @property
    def blinking_version(self) -> int:
        """Increments with every new blinking snapshot."""
        return self._blinking.version

    def brightest(self, n: int) -> list[int]:
        """IDs of the ``n`` brightest spots (by median ON intensity), brightest first."""
        m = self.metrics(force=True)
        order = np.argsort(-np.nan_to_num(m.brightness, nan=-np.inf), kind="stable")
        return [int(i) for i in order[: max(0, int(n))]]

    def health(self) -> dict[str, str]:
        """Display strings for the health panel plus ``banner_level`` and ``banner_text``.

        Keys: ``frames_received``, ``frames_analyzed``, ``frames_shown``,
        ``frames_per_second``, ``lag``, ``gaps``, ``spots``, ``elapsed``,
        ``session``, ``banner_level`` ("ok", "info", "warning" or "error"),
        ``banner_text`` ("" when all is well).
        """
        with self._lock:
            return health_texts(
                self.status,
                n_frames=self.n_frames,
                n_spots=self.n_spots,
                connected=self.connected,
                ever_connected=self._ever_connected,
                connection_detail=self._connection_detail,
                source_name=self.source_name,
                session_id=self.session_id,
                stalled_s=self._clock() - self._last_progress,
                stall_s=self.stall_s,
            )

    def images(self) -> dict[str, tuple[np.ndarray | None, int, int]]:
        """{"latest": (image, frame, version), "mean": (mean image, frames in it, version)}, read together."""
        with self._lock:
            return {
                "latest": (self.image, self.image_frame, self.image_version),
                "mean": (self.mean_image, self.n_frames, self.mean_version),
            }

    def spot_positions(self, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """(S, 2) [x, y] px of the spots shifted by (dx, dy): pass a frame's drift to place them on that frame."""
        with self._lock:
            return np.column_stack([self.spots_x + dx, self.spots_y + dy])

    def image_shape(self) -> tuple[int, int] | None:
        """(rows, cols) of the movie, from the images or ``info["shape"]``; None when unknown."""
        with self._lock:
            for img in (self.image, self.mean_image):
                if img is not None:
                    return int(img.shape[0]), int(img.shape[1])
            shape = self.info.get("shape")
            if shape and len(shape) == 2:
                return int(shape[0]), int(shape[1])
            return None


def _positive_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite number > 0, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    return None
