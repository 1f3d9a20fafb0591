"""The drift-corrected running mean of the stream, in reference-frame coordinates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from plstream.analysis.kernels import mean as _k

__all__ = ["RunningMean"]

# Integer frames are summed in a 32-bit integer array, folded into the float64
# photon sum every this many frames (65536 frames of 16-bit values fit).
_RAW_SUM_TYPES = {
    np.dtype(np.uint8): np.uint32,
    np.dtype(np.uint16): np.uint32,
    np.dtype(np.int8): np.int32,
    np.dtype(np.int16): np.int32,
}
_RAW_SUM_FRAMES = 65536
# A rotation that moves no pixel of the frame by more than this (px) is added as a plain integer shift.
_ROTATION_AS_SHIFT_PX = 0.25
_NO_COUNTS = np.zeros((0, 0), dtype=np.int32)
_Mapping = tuple[Any, ...]  # ("shift", sx, sy) or ("rigid", cos, sin, cx, cy, dx, dy): how a frame was added


class _ShiftHistogram:
    """How many frames were added at each integer shift, and the per-pixel counts that follow."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.frames: dict[tuple[int, int], int] = {}
        self.n_frames = 0
        self._counts = np.zeros(shape, dtype=np.int32)
        self.version = 0  # changes with every frame added, moved or removed
        self._counts_version = 0  # version when _counts was last built
        self.extra = _NO_COUNTS  # per-pixel counts of frames added through a rotation (allocated when needed)

    def add(self, shift: tuple[int, int]) -> None:
        self.frames[shift] = self.frames.get(shift, 0) + 1
        self.n_frames += 1
        self.version += 1

    def remove(self, shift: tuple[int, int]) -> None:
        """Take out one frame added at ``shift``."""
        left = self.frames[shift] - 1
        if left:
            self.frames[shift] = left
        else:
            del self.frames[shift]
        self.n_frames -= 1
        self.version += 1

    def extra_counts(self) -> np.ndarray:
        """The per-pixel counts of rotated frames (the caller's kernel increments them); call add_rotated after."""
        if self.extra.shape != self.shape:
            self.extra = np.zeros(self.shape, dtype=np.int32)
        return self.extra

    def add_rotated(self) -> None:
        self.n_frames += 1
        self.version += 1

    def remove_rotated(self) -> None:
        """Take out one frame added through a rotation (its kernel already took its extra counts out)."""
        self.n_frames -= 1
        self.version += 1

    def clear(self) -> None:
        self.frames.clear()
        self.n_frames = 0
        self.version += 1
        if self.extra.shape == self.shape:
            self.extra[:] = 0

    def counts(self) -> np.ndarray:
        """(H, W) int32, built again only when frames were added since the last call."""
        if self._counts_version != self.version:
            self._fill(0, self._counts)
            self._counts_version = self.version
        return self._counts

    def counts_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of :meth:`counts` (a new array; the whole map is not built)."""
        if self._counts_version == self.version:
            return self._counts[start:stop].copy()
        out = np.empty((max(stop - start, 0), self.shape[1]), dtype=np.int32)
        self._fill(start, out)
        return out

    def _fill(self, row_start: int, out: np.ndarray) -> None:
        shifts = np.array(list(self.frames), dtype=np.int64).reshape(-1, 2)
        frames = np.array(list(self.frames.values()), dtype=np.int64)
        _k.counts_from_shifts(shifts, frames, self.shape[0], row_start, out)
        if self.extra.shape == self.shape:
            out += self.extra[row_start : row_start + out.shape[0]]


class RunningMean:
    """Accumulates frames shifted back by their (rounded) drift.

    Integer shifts keep the noise of each pixel independent (no interpolation),
    so the shot-noise model of the detector stays exact; the PSF is blurred by
    at most half a pixel, which detection tolerates.

    Only sums are kept per pixel; how many frames saw each pixel follows from
    the histogram of the integer shifts and is built when asked for
    (:attr:`counts`). Raw integer frames (:meth:`add_raw`, 8- and 16-bit) are
    summed as integers, exactly, and turned into photons only when the mean
    is asked for (or every 65536 frames), so a frame costs one integer
    read-add-write per pixel.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, columns).
    raw_sum_frames : int
        Raw integer sums are folded into the photon sum after this many
        frames (at most 65536, which 32-bit sums of 16-bit data allow).
    """

    def __init__(self, shape: tuple[int, int], *, raw_sum_frames: int = _RAW_SUM_FRAMES) -> None:
        if not 1 <= raw_sum_frames <= _RAW_SUM_FRAMES:
            raise ValueError(f"raw_sum_frames must be 1..{_RAW_SUM_FRAMES}, got {raw_sum_frames}")
        self._raw_sum_frames = int(raw_sum_frames)
        self._shape = (int(shape[0]), int(shape[1]))
        self._total = np.zeros(self._shape, dtype=np.float64)  # photons
        self._all = _ShiftHistogram(self._shape)
        # raw integer sums not yet in _total, the frames in them, and their camera model
        self._raw_sum = np.zeros((0, 0), dtype=np.uint32)
        self._raw = _ShiftHistogram(self._shape)
        self._raw_camera = (0.0, 1.0)
        # how the last frame was added, and whether into the raw sums (move_last, mean_without_last)
        self._last_mapping: _Mapping | None = None
        self._last_in_raw = False

    @property
    def n_frames(self) -> int:
        """Frames added so far."""
        return self._all.n_frames

    @staticmethod
    def _shift(drift_xy: np.ndarray) -> tuple[int, int]:
        return int(round(float(drift_xy[0]))), int(round(float(drift_xy[1])))  # half to even, as np.rint

    def restore(self, mean: np.ndarray, shifts: dict[tuple[int, int], int]) -> None:
        """Start from a saved mean image (resuming a run) and the whole-pixel shifts of the frames in it.

        Parameters
        ----------
        mean : (H, W) array
            Photons per frame per reference pixel, as :meth:`mean` gives it.
        shifts : dict of (dx, dy) to int
            How many frames were added at each shift; the per-pixel counts follow from them.
        """
        if np.shape(mean) != self._shape:
            raise ValueError(f"the mean image has shape {np.shape(mean)}; expected {self._shape}")
        self._all = _ShiftHistogram(self._shape)
        for shift, n in shifts.items():
            self._all.frames[(int(shift[0]), int(shift[1]))] = int(n)
            self._all.n_frames += int(n)
        counts = self._all.counts()
        self._total = np.where(counts > 0, np.nan_to_num(np.asarray(mean, dtype=np.float64)) * counts, 0.0)
        self._raw_sum = np.zeros((0, 0), dtype=np.uint32)
        self._raw = _ShiftHistogram(self._shape)

    def add(self, frame_photons: np.ndarray, drift_xy: np.ndarray) -> None:
        """Add one frame (photons) whose drift is ``drift_xy`` = (dx, dy) px."""
        shift = self._shift(drift_xy)
        _k.accumulate_shifted(self._total, frame_photons, *shift)
        self._all.add(shift)
        self._last_mapping, self._last_in_raw = ("shift", shift[0], shift[1]), False

    def add_raw(
        self,
        raw: np.ndarray,
        offset_adu: float,
        gain_adu_per_e: float,
        drift_xy: np.ndarray,
        photons_out: np.ndarray,
        *,
        parallel: bool = False,
        rotation: float = 0.0,
        center_xy: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """Convert one raw frame to photons and add it, in one pass over the pixels.

        Parameters
        ----------
        raw : (H, W) array
            Raw camera data, ADU (any integer or float dtype).
        offset_adu, gain_adu_per_e : float
            Camera model: ``photons = (raw - offset_adu) / gain_adu_per_e``
            (computed as ``(raw - offset) * (1 / gain)`` in float64).
        drift_xy : (2,) array
            The frame's drift (dx, dy), px; rounded to whole pixels.
        photons_out : (H, W) float32 array
            Receives the frame in photons.
        parallel : bool
            Spread the rows over numba's threads (identical results).
        rotation : float
            The frame's rotation about ``center_xy``, rad (a frame-0 point p is
            at ``R (p - c) + c + drift_xy``). A rotation that moves pixels by
            more than a quarter pixel within the frame adds each reference
            pixel from the frame pixel nearest to where it is seen (still no
            interpolation); a smaller one is added as the integer shift.
        center_xy : (float, float)
            The rotation centre, px.

        Returns
        -------
        photons_out
        """
        if raw.shape != self._shape or photons_out.shape != raw.shape or photons_out.dtype != np.float32:
            raise ValueError(
                f"raw {raw.shape} and photons_out {photons_out.shape} {photons_out.dtype} must both be "
                f"{self._shape}, photons_out float32"
            )
        if raw.dtype.kind not in "uif":
            raise ValueError(f"raw data must be numeric (integer or float), got dtype {raw.dtype}")
        offset, gain = float(offset_adu), float(gain_adu_per_e)
        mapping = self._mapping(drift_xy, rotation, center_xy)
        sum_type = _RAW_SUM_TYPES.get(raw.dtype)
        if sum_type is not None:
            if self._raw.n_frames and (
                self._raw_sum.dtype != sum_type
                or self._raw_camera != (offset, gain)
                or self._raw.n_frames >= self._raw_sum_frames
            ):
                self._fold_raw_sum()
            if self._raw_sum.dtype != sum_type or self._raw_sum.shape != self._shape:
                self._raw_sum = np.zeros(self._shape, dtype=sum_type)
            self._raw_camera = (offset, gain)
        in_raw = sum_type is not None
        total = self._raw_sum if in_raw else self._total
        if mapping[0] == "shift":
            shifted = _k.ingest_parallel if parallel else _k.ingest
            shifted(raw, offset, gain, photons_out, total, not in_raw, mapping[1], mapping[2])
        else:
            rotated: Any = _k.ingest_rigid_parallel if parallel else _k.ingest_rigid
            counts2 = self._raw.extra_counts() if in_raw else _NO_COUNTS
            rotated(raw, offset, gain, photons_out, total, not in_raw, *mapping[1:], self._all.extra_counts(), counts2)
        self._count(mapping, in_raw, 1)
        self._last_mapping, self._last_in_raw = mapping, in_raw
        return photons_out

    def _mapping(self, drift_xy: np.ndarray, rotation: float, center_xy: tuple[float, float]) -> _Mapping:
        """How a frame with this drift and rotation is added: an integer shift, or through the rotation."""
        if abs(rotation) * math.hypot(*self._shape) * 0.5 > _ROTATION_AS_SHIFT_PX:
            return (
                "rigid",
                math.cos(rotation),
                math.sin(rotation),
                float(center_xy[0]),
                float(center_xy[1]),
                float(drift_xy[0]),
                float(drift_xy[1]),
            )
        shift = self._shift(drift_xy)
        return ("shift", shift[0], shift[1])

    def _count(self, mapping: _Mapping, in_raw: bool, sign: int) -> None:
        """The frame counts of a frame added (sign 1) or taken out (-1) with ``mapping``.

        Rotated frames' per-pixel counts are changed by their kernel; here only the frame totals.
        """
        hists = (self._all, self._raw) if in_raw else (self._all,)
        for hist in hists:
            if mapping[0] == "shift":
                shift = (int(mapping[1]), int(mapping[2]))
                hist.add(shift) if sign > 0 else hist.remove(shift)
            else:
                hist.add_rotated() if sign > 0 else hist.remove_rotated()

    def move_last(
        self,
        raw: np.ndarray,
        photons: np.ndarray,
        drift_xy: np.ndarray,
        *,
        rotation: float = 0.0,
        center_xy: tuple[float, float] = (0.0, 0.0),
    ) -> bool:
        """Put the frame added last where its measured drift says, if that differs from where it went.

        A frame is added at its *predicted* drift (one pass over its pixels,
        before the drift is measured); when the measured drift rounds to
        another shift (or its rotation moves pixels), the frame is taken out
        and added again, so the mean holds every frame where it belongs.
        ``raw`` and ``photons`` are the frame as given to and returned by
        :meth:`add_raw`. Returns True when it moved.
        """
        old = self._last_mapping
        new = self._mapping(drift_xy, rotation, center_xy)
        if old is None or new == old:
            return False
        in_raw = self._last_in_raw
        total, source = (self._raw_sum, raw) if in_raw else (self._total, photons)
        for mapping, sign in ((old, -1), (new, 1)):
            if mapping[0] == "shift":
                _k.shift_accumulate(total, source, int(mapping[1]), int(mapping[2]), sign)
            else:
                counts2 = self._raw.extra_counts() if in_raw else _NO_COUNTS
                accumulate: Any = _k.rigid_accumulate
                accumulate(source, total, sign, *mapping[1:], self._all.extra_counts(), counts2)
            self._count(mapping, in_raw, sign)
        self._last_mapping = new
        return True

    def mean_without_last(self, frame_photons: np.ndarray) -> np.ndarray:
        """The mean of every frame but the last one added (``frame_photons``), reference coordinates.

        Image registration compares a frame with this, not with a mean that
        already holds the frame itself (which would pull the answer towards
        the predicted drift the frame was added at). Pixels only the last
        frame saw get the median of the others.
        """
        mean, counts = self.mean_and_counts()
        if self.n_frames < 2 or self._last_mapping is None:
            return np.full(self._shape, float(np.median(frame_photons)), dtype=np.float32)
        contribution, seen = self._last_contribution(frame_photons, self._last_mapping)
        others = counts.astype(np.float64) - seen
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (counts * mean.astype(np.float64) - contribution) / others
        bad = ~(others > 0) | ~np.isfinite(out)
        if bad.all():
            return np.full(self._shape, float(np.median(frame_photons)), dtype=np.float32)
        if bad.any():
            out[bad] = np.median(out[~bad])
        return out.astype(np.float32)

    def _last_contribution(self, frame_photons: np.ndarray, mapping: _Mapping) -> tuple[np.ndarray, np.ndarray]:
        """What a frame added with ``mapping`` gave each reference pixel, and 1 where it gave something."""
        height, width = self._shape
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        if mapping[0] == "shift":
            xf, yf = cols + mapping[1], rows + mapping[2]
        else:
            c, s, cx, cy, dx, dy = mapping[1:]
            u, v = cols - cx, rows - cy
            xf = np.floor(c * u - s * v + cx + dx + 0.5)
            yf = np.floor(s * u + c * v + cy + dy + 0.5)
        inside = (xf >= 0) & (yf >= 0) & (xf < width) & (yf < height)
        contribution = np.zeros(self._shape)
        contribution[inside] = frame_photons[yf[inside].astype(np.intp), xf[inside].astype(np.intp)]
        return contribution, inside.astype(np.float64)

    def _fold_raw_sum(self) -> None:
        """Move the raw integer sums into the photon sum."""
        offset, gain = self._raw_camera
        _k.flush_raw_sum(self._raw_sum, self._raw.counts(), offset, gain, self._total)
        self._raw.clear()

    @property
    def counts(self) -> np.ndarray:
        """Frames that contributed to each reference pixel, (H, W) int32 (do not modify)."""
        return self._all.counts()

    def counts_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of :attr:`counts` (a new array)."""
        start, stop = self._row_range(start, stop)
        return self._all.counts_rows(start, stop)

    def _row_range(self, start: int, stop: int | None) -> tuple[int, int]:
        height = self._shape[0]
        stop = height if stop is None else min(int(stop), height)
        start = min(max(int(start), 0), stop)
        return start, stop

    def mean(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Mean photons per frame per reference pixel; pixels never seen get the median of the rest.

        Parameters
        ----------
        start, stop : int
            Only reference rows ``start:stop`` (default all): a band costs
            what its pixels cost.

        Returns
        -------
        (stop - start, W) float32 array
        """
        return self.mean_and_counts(start, stop)[0]

    def mean_and_counts(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`mean` and the matching rows of :attr:`counts` (int32; do not modify)."""
        start, stop = self._row_range(start, stop)
        whole = start == 0 and stop == self._shape[0]
        counts = self.counts if whole else self.counts_rows(start, stop)
        out = np.zeros((stop - start, self._shape[1]), dtype=np.float32)
        if self.n_frames == 0 or out.size == 0:
            return out, counts
        if self._raw.n_frames:
            partial = self._raw_sum[start:stop]
            partial_counts = self._raw.counts() if whole else self._raw.counts_rows(start, stop)
        else:
            partial, partial_counts = np.zeros((0, 0), dtype=np.uint32), counts
        offset, gain = self._raw_camera
        unseen = _k.mean_of_sums(self._total[start:stop], partial, partial_counts, offset, gain, counts, out)
        if 0 < unseen < out.size:
            seen = counts > 0
            out[~seen] = np.median(out[seen])
        return out, counts
