"""Refined ON / OFF / GRAY states: change points, intensity levels and decoded states, as frames arrive.

Two statistical steps per spot, on its intensity trace x (photons):

1. **Change points and levels.** The trace is cut into segments of constant
   level by an exact penalized-likelihood change-point search (PELT, see
   :mod:`plstream.analysis.kernels.segment`): Gaussian noise of variance
   ``a + g * level`` (OFF noise plus shot noise, both measured robustly from
   the trace itself and pooled over the spots through their local background),
   made homoscedastic by the generalized Anscombe
   transform, and a fixed cost per change point
   (``blinking.change_point_penalty``, BIC-like: two parameters per change
   point, about ``2 ln n``). From the segments, duration-weighted:
   ``L_on`` = the median level of the significant segments within 60 % of the
   brightest (their 90th percentile); ``L_off`` = the median level of those
   below 30 % of ``L_on`` (0 when none: the intensity is background-subtracted);
   ``L_gray`` = the median level of the segments of at least
   ``gray_min_frames`` frames (together at least ``gray_min_total_frames``) between the trace extractor's thresholds
   ``L_off + off_fraction (L_on - L_off)`` and ``L_off + on_fraction (L_on - L_off)``
   whose scatter is that of a constant level (a segment that only averages a
   particle blinking faster than the frames is not a GRAY level).
2. **States.** A hidden-Markov chain over OFF, ON and (when the spot has a
   GRAY level) GRAY, with those levels and the same noise model, and a cost
   per change of state (``blinking.switch_cost``), is decoded by Viterbi over
   a window that looks ``lag_frames`` ahead: a frame's state is final once
   ``lag_frames`` later frames have been seen (or at the end of the run).
   A frame that switched during its exposure gets the state it spent most
   of the exposure in, as nearly as its intensity tells.

Streaming: :meth:`Segmenter.push` takes each result row and returns a
provisional state for it at once (its intensity against the spot's current
levels); every ``update_every_frames`` frames both steps run again on each
spot's open window, and :meth:`Segmenter.take_runs` hands out the states that
became final as runs ``(spot, first_frame, n_frames, state)`` to be written
over the provisional ones. Memory is bounded: a window of at most
``max_window_frames`` (plus a little) frames per spot, and the final
segments and runs (a few numbers each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from plstream.analysis.kernels import segment as _k
from plstream.analysis.kernels import states as _states
from plstream.config import SettingsError

__all__ = ["GRAY", "NOT_MEASURED", "OFF", "ON", "SegmentParams", "Segmenter", "SpotRuns", "spot_levels"]

OFF, ON, GRAY, NOT_MEASURED = 0, 1, 2, -1
_Z_SIGNIFICANT = 5.0


@dataclass(frozen=True)
class SegmentParams:
    """How traces are segmented and decoded (the ``[blinking]`` settings of the same names)."""

    change_point_penalty: float = 14.0
    switch_cost: float = 1.0
    lag_frames: int = 100
    max_window_frames: int = 400
    update_every_frames: int = 100
    on_fraction: float = 0.5
    off_fraction: float = 0.2
    gray_min_frames: int = 5
    gray_min_total_frames: int = 20
    level_memory_frames: int = 5000
    max_candidates: int = 24

    def __post_init__(self) -> None:
        if not self.change_point_penalty > 0 or not self.switch_cost >= 0:
            raise ValueError("change_point_penalty must be > 0 and switch_cost >= 0")
        if not 0 < self.off_fraction < self.on_fraction < 1:
            raise ValueError(f"need 0 < off_fraction ({self.off_fraction}) < on_fraction ({self.on_fraction}) < 1")
        if min(self.lag_frames, self.update_every_frames, self.gray_min_frames) < 1:
            raise ValueError("lag_frames, update_every_frames and gray_min_frames must be >= 1")
        if self.max_window_frames < 2 * self.lag_frames:
            raise ValueError(
                f"max_window_frames ({self.max_window_frames}) must be at least twice lag_frames ({self.lag_frames})"
            )
        if self.max_candidates < 16:
            raise ValueError(f"max_candidates must be >= 16, got {self.max_candidates}")


@dataclass(frozen=True)
class SpotRuns:
    """Runs of one state in one spot's final states, in time order.

    Attributes
    ----------
    start, length : (K,) int64
        First frame index and number of frames.
    state : (K,) int8
        OFF 0, ON 1, GRAY 2.
    starts_piece : (K,) bool
        The run follows a gap in the stream or an unmeasured frame, or is the
        spot's first: a dwell cannot continue into it from the run before.
    total : (K,) float64
        Sum of the intensities, photons.
    """

    start: np.ndarray
    length: np.ndarray
    state: np.ndarray
    starts_piece: np.ndarray
    total: np.ndarray


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[min(int(np.searchsorted(cum, q * cum[-1])), len(v) - 1)])


def spot_levels(
    level: np.ndarray, length: np.ndarray, rss: np.ndarray, off_variance: float, params: SegmentParams
) -> tuple[float, float, float]:
    """``(L_off, L_on, L_gray)`` of one spot from its segments (photons; see the module docstring).

    ``L_on`` is NaN when the spot was never significantly ON, ``L_gray`` when
    it has no GRAY level.

    Parameters
    ----------
    level, length, rss : arrays
        Segment levels (photons), lengths (frames) and residual sums of squares
        of the transformed values (about ``length - 1`` for a constant level).
    off_variance : float
        Per-frame variance of an OFF frame, photons² (the significance of a level).
    """
    level = np.asarray(level, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    if len(level) == 0:
        return 0.0, math.nan, math.nan
    z = level / np.sqrt(max(off_variance, 1e-12) / np.maximum(length, 1.0))
    bright = z > _Z_SIGNIFICANT
    if not bright.any():
        return 0.0, math.nan, math.nan
    top = _weighted_quantile(level[bright], length[bright], 0.9)
    sel = bright & (level >= 0.6 * top)
    on = _weighted_quantile(level[sel], length[sel], 0.5)
    low = level <= 0.3 * on
    off = _weighted_quantile(level[low], length[low], 0.5) if low.any() else 0.0
    span = on - off
    dof = np.maximum(length - 1.0, 1.0)
    steady = np.asarray(rss) <= dof + 3.0 * np.sqrt(2.0 * dof)
    mid = (
        (level > off + params.off_fraction * span)
        & (level < off + params.on_fraction * span)
        & (length >= params.gray_min_frames)
        & steady
    )
    enough = mid.any() and float(length[mid].sum()) >= params.gray_min_total_frames
    gray = _weighted_quantile(level[mid], length[mid], 0.5) if enough else math.nan
    return off, on, gray


class _Store:
    """Growing columns of rows of equal width (final segments or runs)."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.data = np.empty((1024, width))

    def extend(self, rows: np.ndarray) -> None:
        if self.n + len(rows) > len(self.data):
            grown = np.empty((max(2 * len(self.data), self.n + len(rows)), self.data.shape[1]))
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : self.n + len(rows)] = rows
        self.n += len(rows)

    def rows(self) -> np.ndarray:
        return self.data[: self.n]


class Segmenter:
    """Refined ON / OFF / GRAY states of every spot, updated as result rows arrive.

    Feed it every result row in order (:meth:`push` or :meth:`push_block`),
    then call :meth:`finish`; :meth:`take_runs` hands out the final states.

    Parameters
    ----------
    params : SegmentParams
    """

    def __init__(self, params: SegmentParams | None = None) -> None:
        self.params = params or SegmentParams()
        p = self.params
        self._width = p.max_window_frames + 2 * p.update_every_frames + p.lag_frames
        self._spots = 0
        self._cap = 0
        self._t0 = 0  # frame index of window column 0
        self._n = 0  # columns filled
        self._frames = 0
        self._since_update = 0
        self._last_seq: int | None = None
        self._piece = np.zeros(self._width, np.int8)
        self._window = np.empty((0, self._width))
        self._causal = np.empty((0, self._width), np.int8)
        self._begin = np.zeros(0, np.int64)
        self._cont = np.zeros(0, np.int8)
        self._vbegin = np.zeros(0, np.int64)
        self._last_state = np.zeros(0, np.int8)
        self._noise = np.empty((0, 2))
        self._levels = np.empty((0, 3))
        self._bg_sum = np.zeros(0)
        self._bg_n = np.zeros(0)
        self._segments = _Store(7)  # final segments: spot, start frame, frames, sum x, starts_piece, rss, 1
        self._runs = _Store(6)  # final runs: spot, start frame, frames, state, sum x, starts_piece
        self._handed = 0  # runs handed out by take_runs
        self._finished = False
        self._work_f = np.empty((4, self._width + 1))
        self._work_i = np.empty((3, self._width + 1), np.int64)
        self._scratch = np.empty(self._width + 1)
        self._scratch2 = np.empty(2 * self._width + 2)
        self._back = np.empty((self._width + 1, 3), np.int8)
        self._out = np.empty((max(4 * self._width, 8192), 7))

    # ------------------------------------------------------------------ state
    @property
    def n_spots(self) -> int:
        return self._spots

    @property
    def n_frames(self) -> int:
        """Rows pushed so far."""
        return self._frames

    @property
    def finished(self) -> bool:
        return self._finished

    def levels(self) -> np.ndarray:
        """(S, 3) float64 ``[L_off, L_on, L_gray]`` per spot, photons (NaN: not known / no such level)."""
        return self._levels[: self._spots].copy()

    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(off_threshold, on_threshold)`` per spot, photons: the trace extractor's thresholds on our levels."""
        lv = self._levels[: self._spots]
        span = lv[:, 1] - lv[:, 0]
        return lv[:, 0] + self.params.off_fraction * span, lv[:, 0] + self.params.on_fraction * span

    def final_frames(self) -> np.ndarray:
        """(S,) int64: frames ``0 .. final_frames[i]-1`` of spot i have their final state."""
        if self._finished:
            return np.full(self._spots, self._frames, np.int64)
        return (self._t0 + self._vbegin[: self._spots]).astype(np.int64)

    def noise(self) -> np.ndarray:
        """(S, 2) ``[a, g]``: OFF variance (photons²) and shot-noise factor of each spot's trace."""
        return self._noise[: self._spots].copy()

    # ------------------------------------------------------------------ input
    def _grow_spots(self, n: int) -> None:
        if n <= self._spots:
            return
        if n > self._cap:
            cap = max(n, 2 * self._cap, 64)

            def grown(old: np.ndarray, fill: float, shape: tuple[int, ...]) -> np.ndarray:
                new = np.full((cap, *shape), fill, dtype=old.dtype)
                new[: self._cap] = old
                return new

            self._window = grown(self._window, np.nan, (self._width,))
            self._causal = grown(self._causal, -1, (self._width,))
            self._begin = grown(self._begin, 0, ())
            self._cont = grown(self._cont, 0, ())
            self._vbegin = grown(self._vbegin, 0, ())
            self._last_state = grown(self._last_state, -1, ())
            self._noise = grown(self._noise, np.nan, (2,))
            self._noise[self._cap :, 1] = 1.0
            self._levels = grown(self._levels, np.nan, (3,))
            self._bg_sum = grown(self._bg_sum, 0.0, ())
            self._bg_n = grown(self._bg_n, 0.0, ())
            self._cap = cap
        # a new spot's window starts at the current column 0 (its earlier frames are NaN: not measured)
        self._begin[self._spots : n] = 0
        self._vbegin[self._spots : n] = 0
        self._spots = n

    def _compact(self) -> None:
        """Drop the window columns every spot has finished with."""
        s = self._spots
        keep_from = min(int(self._begin[:s].min()), int(self._vbegin[:s].min())) if s else self._n
        keep_from = min(keep_from, self._n)
        if keep_from == 0:
            raise RuntimeError("internal error: the segmentation window is full and no spot can move on")
        k = self._n - keep_from
        self._window[:, :k] = self._window[:, keep_from : self._n]
        self._window[:, k:] = np.nan
        self._causal[:, :k] = self._causal[:, keep_from : self._n]
        self._causal[:, k:] = -1
        self._piece[:k] = self._piece[keep_from : self._n]
        self._piece[k:] = 0
        self._begin[:s] -= keep_from
        self._vbegin[:s] -= keep_from
        self._t0 += keep_from
        self._n = k

    def push(
        self, seq: int, values: np.ndarray, causal: np.ndarray, background: np.ndarray | None = None
    ) -> np.ndarray:
        """Add one result row; returns its provisional state per spot (int8, -1 where not measured).

        Parameters
        ----------
        seq : int
            The frame's sequence number (a jump means frames were lost: dwells end there).
        values : (S_t,) float
            The spots' intensities, photons (NaN = not measured).
        causal : (S_t,) int8
            The causal ON/OFF state of the row (1, 0, -1): where the noise is measured.
        background : (S_t,) float, optional
            The spots' local background, photons/px: the OFF noise of all spots is
            pooled through it (it is proportional to the background).
        """
        values = np.asarray(values, dtype=np.float64)
        bg = None if background is None else np.asarray(background)[None, :]
        return self.push_block(np.array([seq]), values[None, :], np.asarray(causal)[None, :], bg)[0]

    def push_block(
        self, seq: np.ndarray, values: np.ndarray, causal: np.ndarray, background: np.ndarray | None = None
    ) -> np.ndarray:
        """Add consecutive rows ``(n, S)``; returns their provisional states ``(n, S)`` int8."""
        if self._finished:
            raise RuntimeError("push() after finish() on a Segmenter")
        values = np.asarray(values, dtype=np.float64)
        causal = np.asarray(causal, dtype=np.int8)
        n_rows, n_spots = values.shape
        self._grow_spots(n_spots)
        if background is not None:
            bg = np.asarray(background, dtype=np.float64)
            ok = np.isfinite(bg)
            self._bg_sum[:n_spots] += np.where(ok, bg, 0.0).sum(axis=0)
            self._bg_n[:n_spots] += ok.sum(axis=0)
        out = np.empty((n_rows, n_spots), np.int8)
        row = 0
        while row < n_rows:
            if self._n == self._width:
                self._compact()
            take = min(self._width - self._n, n_rows - row, self.params.update_every_frames - self._since_update)
            cols = slice(self._n, self._n + take)
            block = values[row : row + take]
            self._window[:n_spots, cols] = block.T
            self._causal[:n_spots, cols] = causal[row : row + take].T
            for k in range(take):
                s = int(seq[row + k])
                self._piece[self._n + k] = 1 if self._last_seq is not None and s != self._last_seq + 1 else 0
                self._last_seq = s
            out[row : row + take] = self._provisional(block, causal[row : row + take])
            self._n += take
            self._frames += take
            self._since_update += take
            row += take
            if self._since_update >= self.params.update_every_frames:
                self._update(final=False)
                self._since_update = 0
        return out

    def _provisional(self, block: np.ndarray, causal: np.ndarray) -> np.ndarray:
        lv = self._levels[: block.shape[1]]
        mid = 0.5 * (lv[:, 0] + lv[:, 1])
        state = np.where(np.isfinite(mid), np.where(block >= mid, ON, OFF), causal)
        return np.where(np.isfinite(block), state, NOT_MEASURED).astype(np.int8)

    def finish(self) -> None:
        """End of the run: every remaining frame gets its final state."""
        if not self._finished:
            self._update(final=True)
            self._finished = True

    # ------------------------------------------------------------------ output
    def take_runs(self) -> np.ndarray:
        """The final states decided since the last call: rows ``[spot, first_frame, n_frames, state]`` (int64)."""
        rows = self._runs.rows()[self._handed :]
        self._handed = self._runs.n
        return rows[:, :4].astype(np.int64)

    def runs(self, spot: int | None = None) -> tuple[np.ndarray, SpotRuns]:
        """Final runs (all after :meth:`finish`), ordered by spot and time: ``(spot of each run, SpotRuns)``."""
        rows = self._runs.rows()
        if spot is not None:
            rows = rows[rows[:, 0] == spot]
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        return rows[:, 0].astype(np.int64), SpotRuns(
            start=rows[:, 1].astype(np.int64),
            length=rows[:, 2].astype(np.int64),
            state=rows[:, 3].astype(np.int8),
            starts_piece=rows[:, 5] > 0.5,
            total=rows[:, 4].copy(),
        )

    def state_means(self) -> np.ndarray:
        """(S, 3) float32: mean intensity of each spot's final OFF, GRAY and ON frames, photons (NaN: none)."""
        rows = self._runs.rows()
        out = np.full((self._spots, 3), np.nan, np.float32)
        spot = rows[:, 0].astype(np.int64)
        for column, state in enumerate((OFF, GRAY, ON)):
            sel = rows[:, 3] == state
            frames = np.bincount(spot[sel], weights=rows[sel, 2], minlength=self._spots)[: self._spots]
            total = np.bincount(spot[sel], weights=rows[sel, 4], minlength=self._spots)[: self._spots]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, column] = np.where(frames > 0, total / np.maximum(frames, 1), np.nan)
        return out

    # ------------------------------------------------------------------ work
    def _call(self, kernel: Any, *args: Any) -> np.ndarray:
        """Run a kernel over all spots (again from where it stopped when its output filled up)."""
        first, chunks = 0, []
        while first < self._spots:
            n_out, first = kernel(*args, first)
            if n_out:
                chunks.append(self._out[:n_out, : args[-1].shape[1]].copy())
        return np.concatenate(chunks) if chunks else np.zeros((0, args[-1].shape[1]))

    def _update(self, *, final: bool) -> None:
        s = self._spots
        if s == 0:
            return
        p = self.params
        segs = self._call(
            _k.segment_spots,
            self._window[:s],
            self._causal[:s],
            self._piece,
            self._begin[:s],
            self._cont[:s],
            self._n,
            p.lag_frames,
            p.max_window_frames,
            final,
            p.change_point_penalty,
            p.max_candidates,
            self._noise[:s],
            self._work_f,
            self._work_i,
            self._scratch,
            self._scratch2,
            self._out[:, :7],
        )
        self._pool_noise()
        done = segs[:, 6] > 0.5
        final_rows = segs[done].copy()
        final_rows[:, 1] += self._t0
        self._segments.extend(final_rows)
        self._update_levels(segs[~done])
        runs = self._call(
            _states.decode_spots,
            self._window[:s],
            self._piece,
            self._vbegin[:s],
            self._last_state[:s],
            self._n,
            p.lag_frames,
            final,
            self._levels[:s],
            self._noise[:s],
            p.switch_cost,
            self._back,
            self._out[:, :6],
        )
        runs[:, 1] += self._t0
        self._runs.extend(runs)

    def _pool_noise(self) -> None:
        """Replace each spot's OFF variance by the pooled ``k * mean background`` and its shot factor by the median.

        One spot's own estimate is fooled when it blinks faster than the frames
        (partly-on frames look like noise); the ratio of OFF variance to local
        background is the same for every spot (one aperture, one camera), so
        its median over the spots is robust, and so is the median shot factor.
        """
        s = self._spots
        a = self._noise[:s, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            bg = self._bg_sum[:s] / self._bg_n[:s]
        ok = np.isfinite(a) & np.isfinite(bg) & (bg > 0)
        if np.count_nonzero(ok) >= 3:
            k = float(np.median(a[ok] / bg[ok]))
            self._noise[:s, 0] = np.where(np.isfinite(bg) & (bg > 0), k * bg, np.nanmedian(a[ok]))
        g = self._noise[:s, 1]
        if s >= 3:
            self._noise[:s, 1] = float(np.clip(np.median(g), 0.3, 3.0))

    def _update_levels(self, open_segments: np.ndarray) -> None:
        """Levels of every spot from its recent final segments and those of its open window.

        Final segments older than ``level_memory_frames`` are forgotten (the
        levels follow a particle whose brightness drifts, and the work and
        memory per update stay bounded).
        """
        store = self._segments
        horizon = self._t0 + self._n - self.params.level_memory_frames
        rows = store.rows()
        if len(rows) and rows[0, 1] < horizon:
            keep = rows[:, 1] + rows[:, 2] >= horizon
            kept = rows[keep]
            store.n = 0
            store.extend(kept)
        rows = np.concatenate([store.rows(), open_segments])
        if len(rows) == 0:
            return
        length = rows[:, 2].copy()
        p = self.params
        noise_a = np.where(np.isfinite(self._noise[: self._spots, 0]), self._noise[: self._spots, 0], 1.0)
        _states.spot_levels(
            rows[:, 0].astype(np.int64),
            rows[:, 3] / np.maximum(length, 1.0),
            length,
            rows[:, 5].copy(),
            noise_a,
            p.on_fraction,
            p.off_fraction,
            float(p.gray_min_frames),
            float(p.gray_min_total_frames),
            _Z_SIGNIFICANT,
            self._levels[: self._spots],
        )


def params_from_settings(blinking: object) -> SegmentParams:
    """SegmentParams from the ``[blinking]`` settings (a :class:`~plstream.config.BlinkingSettings`)."""
    names = [f for f in SegmentParams.__dataclass_fields__ if f not in ("max_candidates", "level_memory_frames")]
    return SegmentParams(**{name: getattr(blinking, name) for name in names})


SIGNALS = ("weighted", "intensity")


def signal_of(blinking: object) -> str:
    """The result field the refined states are read from (``blinking.segment_signal``), checked.

    Raises
    ------
    SettingsError
        Neither ``weighted`` nor ``intensity``.
    """
    signal = str(getattr(blinking, "segment_signal", "weighted"))
    if signal not in SIGNALS:
        raise SettingsError(
            f"blinking.segment_signal = {signal!r} is not allowed: it must be 'weighted' or 'intensity'"
        )
    return signal
