"""The catalog of spots found so far: stable IDs, reference positions, refinement."""

from __future__ import annotations

import numpy as np

__all__ = ["SpotCatalog"]


class SpotCatalog:
    """Spots in order of discovery; a spot's ID is its index and never changes.

    Each spot's reference-frame position starts at its detection and is then
    refined as the inverse-variance weighted mean of its drift-corrected fits,
    so it becomes far more precise than any single frame's fit.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._xy = np.zeros((capacity, 2))
        self._weight = np.zeros(capacity)
        self._first_frame = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def xy(self) -> np.ndarray:
        """(S, 2) reference-frame positions (x, y), px. A view: copy to keep."""
        return self._xy[: self.count]

    @property
    def weight(self) -> np.ndarray:
        """(S,) sum of inverse variances folded into each position, 1/px^2 (0 = detection only)."""
        return self._weight[: self.count]

    @property
    def first_frame(self) -> np.ndarray:
        """(S,) frame index where each spot was discovered."""
        return self._first_frame[: self.count]

    def position_variance(self) -> np.ndarray:
        """(S,) variance of each reference position per axis, px^2 (inf before its first fit)."""
        w = self.weight
        with np.errstate(divide="ignore"):
            return np.where(w > 0, 1.0 / np.maximum(w, 1e-300), np.inf)

    def add(self, xy: np.ndarray, frame_index: int) -> np.ndarray:
        """Append new spots at reference positions ``xy`` (K, 2); returns their IDs."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        k = xy.shape[0]
        if self.count + k > self._xy.shape[0]:
            capacity = max(2 * self._xy.shape[0], self.count + k)
            self._xy = np.resize(self._xy, (capacity, 2))
            self._weight = np.resize(self._weight, capacity)
            self._first_frame = np.resize(self._first_frame, capacity)
        ids = np.arange(self.count, self.count + k)
        self._xy[ids] = xy
        self._weight[ids] = 0.0
        self._first_frame[ids] = frame_index
        self.count += k
        return ids

    def restore(self, xy: np.ndarray, weight: np.ndarray, first_frame: np.ndarray) -> None:
        """Replace the catalog by saved spots (resuming a run): positions (S, 2), weights and discovery frames (S,)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        n = xy.shape[0]
        capacity = max(self._xy.shape[0], n)
        self._xy = np.zeros((capacity, 2))
        self._weight = np.zeros(capacity)
        self._first_frame = np.zeros(capacity, dtype=np.int64)
        self._xy[:n] = xy
        self._weight[:n] = weight
        self._first_frame[:n] = first_frame
        self.count = n

    def shift(self, delta_xy: np.ndarray) -> None:
        """Move every reference position by ``delta_xy`` (a change of the reference offset)."""
        self._xy[: self.count] += np.asarray(delta_xy, dtype=np.float64)

    def transform(self, theta: float, center_xy: tuple[float, float], delta_xy: np.ndarray) -> None:
        """Move every reference position p to ``R(theta) (p - c) + c + delta_xy`` (a change of the reference gauge)."""
        if theta == 0.0:
            self.shift(delta_xy)
            return
        xy = self._xy[: self.count]
        c, s = np.cos(theta), np.sin(theta)
        u, v = xy[:, 0] - center_xy[0], xy[:, 1] - center_xy[1]
        delta = np.asarray(delta_xy, dtype=np.float64)
        xy[:, 0], xy[:, 1] = c * u - s * v + center_xy[0] + delta[0], s * u + c * v + center_xy[1] + delta[1]

    def refine(self, measured_xy: np.ndarray, variance: np.ndarray, use: np.ndarray) -> None:
        """Fold drift-corrected positions into the reference positions.

        Parameters
        ----------
        measured_xy : (S, 2)
            This frame's fitted positions minus this frame's drift, px.
        variance : (S,)
            Their variance per axis, px^2.
        use : (S,) bool
            Which spots to update.
        """
        n = self.count
        use = use[:n] & np.isfinite(variance[:n]) & (variance[:n] > 0)
        if not use.any():
            return
        w_new = 1.0 / variance[:n][use]
        w_old = self._weight[:n][use]
        total = w_old + w_new
        xy = self._xy[:n]
        xy[use] = (xy[use] * w_old[:, None] + measured_xy[:n][use] * w_new[:, None]) / total[:, None]
        self._weight[:n][use] = total
