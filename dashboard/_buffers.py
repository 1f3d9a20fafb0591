"""Growable per-frame buffers of the dashboard model, with running on/off counts (numpy only)."""

from __future__ import annotations

import numpy as np

from plstream.dashboard._numeric import state_counts

__all__ = ["FrameBuffers"]

_RECOUNT_BLOCK = 8192


def _grown(arr: np.ndarray, length: int, fill: float) -> np.ndarray:
    out = np.full((length, *arr.shape[1:]), fill, arr.dtype)
    out[: len(arr)] = arr
    return out


class FrameBuffers:
    """Rows 0..n_frames-1 of a session, preallocated, each capacity doubling when outgrown.

    Intensity and state are stored spot-major, (S_capacity, T_capacity), so a
    trace is one contiguous row; entries never written are NaN / -1. Not
    thread-safe: the model holds its lock around every call.

    Attributes
    ----------
    seq, timestamp : (T_capacity,) int64, float64
    drift : (T_capacity, 2) float64
    intensity : (S_capacity, T_capacity) float32
    state : (S_capacity, T_capacity) int8
    n_frames, n_spots : int
        Rows written; spot columns in use.
    """

    def __init__(self, frames: int, spots: int) -> None:
        self.seq = np.zeros(frames, np.int64)
        self.timestamp = np.zeros(frames, np.float64)
        self.drift = np.zeros((frames, 2), np.float64)
        self.intensity = np.full((spots, frames), np.nan, np.float32)
        self.state = np.full((spots, frames), -1, np.int8)
        self.n_frames = 0
        self.n_spots = 0
        self._on = np.zeros(spots, np.int64)
        self._measured = np.zeros(spots, np.int64)
        self._switches = np.zeros(spots, np.int64)
        self._last = np.full(spots, -1, np.int8)
        self._stale = False

    def ensure(self, n_rows: int, n_spots: int) -> None:
        """Make room for ``n_rows`` frames and ``n_spots`` spots (doubling; copies what is held)."""
        s_cap, t_cap = self.intensity.shape
        if n_rows <= t_cap and n_spots <= s_cap:
            return
        new_t, new_s = t_cap, s_cap
        while new_t < n_rows:
            new_t *= 2
        while new_s < n_spots:
            new_s *= 2
        t, s = self.n_frames, self.n_spots
        if new_t != t_cap:
            self.seq = _grown(self.seq, new_t, 0)
            self.timestamp = _grown(self.timestamp, new_t, 0.0)
            self.drift = _grown(self.drift, new_t, 0.0)
        intensity = np.full((new_s, new_t), np.nan, np.float32)
        intensity[:s, :t] = self.intensity[:s, :t]
        state = np.full((new_s, new_t), -1, np.int8)
        state[:s, :t] = self.state[:s, :t]
        self.intensity, self.state = intensity, state
        if new_s != s_cap:
            self._on = _grown(self._on, new_s, 0)
            self._measured = _grown(self._measured, new_s, 0)
            self._switches = _grown(self._switches, new_s, 0)
            self._last = _grown(self._last, new_s, -1)

    def set_spots(self, n_spots: int) -> None:
        """Use ``n_spots`` spot columns (they only grow)."""
        self.ensure(self.n_frames, n_spots)
        self.n_spots = max(self.n_spots, int(n_spots))

    def write(self, t0: int, seq, timestamp, drift, intensity, state) -> None:
        """Store rows ``t0 .. t0+n-1`` (row-major (n, S') blocks, S' <= n_spots); ``t0 <= n_frames``."""
        n = len(seq)
        t1 = t0 + n
        s = min(int(intensity.shape[1]) if np.ndim(intensity) == 2 else 0, self.n_spots)
        self.ensure(t1, self.n_spots)
        self.seq[t0:t1] = seq
        self.timestamp[t0:t1] = timestamp
        self.drift[t0:t1] = drift
        self.intensity[:s, t0:t1] = intensity[:, :s].T
        self.state[:s, t0:t1] = state[:, :s].T
        if t0 < self.n_frames:
            self._stale = True  # rows were overwritten: recount from scratch when asked
        elif not self._stale:
            self._count(self.state[:s, t0:t1], s)
        self.n_frames = max(self.n_frames, t1)

    def _count(self, block: np.ndarray, s: int) -> None:
        if s == 0 or block.shape[1] == 0:
            return
        on, measured, switches, last = state_counts(block, self._last[:s])
        self._on[:s] += on
        self._measured[:s] += measured
        self._switches[:s] += switches
        self._last[:s] = last

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ON frames, measured frames, on<->off switches) per spot, (S,) int64 each (copies)."""
        if self._stale:
            s = self.n_spots
            for arr, fill in ((self._on, 0), (self._measured, 0), (self._switches, 0), (self._last, -1)):
                arr[:] = fill
            for start in range(0, self.n_frames, _RECOUNT_BLOCK):
                self._count(self.state[:s, start : min(start + _RECOUNT_BLOCK, self.n_frames)], s)
            self._stale = False
        s = self.n_spots
        return self._on[:s].copy(), self._measured[:s].copy(), self._switches[:s].copy()
