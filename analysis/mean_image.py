"""The drift-corrected running mean of the stream, in reference-frame coordinates."""

from __future__ import annotations

import numpy as np

from plstream.analysis._mean_kernels import accumulate_shifted

__all__ = ["RunningMean"]


class RunningMean:
    """Accumulates frames shifted back by their (rounded) drift.

    Integer shifts keep the noise of each pixel independent (no interpolation),
    so the shot-noise model of the detector stays exact; the PSF is blurred by
    at most half a pixel, which detection tolerates.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, columns).
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self._total = np.zeros(shape, dtype=np.float64)
        self._counts = np.zeros(shape, dtype=np.int32)
        self.n_frames = 0

    def add(self, frame_photons: np.ndarray, drift_xy: np.ndarray) -> None:
        """Add one frame (photons) whose drift is ``drift_xy`` = (dx, dy) px."""
        shift_x = int(np.rint(drift_xy[0]))
        shift_y = int(np.rint(drift_xy[1]))
        accumulate_shifted(self._total, self._counts, frame_photons, shift_x, shift_y)
        self.n_frames += 1

    @property
    def counts(self) -> np.ndarray:
        """Frames that contributed to each reference pixel, (H, W) int32."""
        return self._counts

    def mean(self) -> np.ndarray:
        """Mean photons per frame per reference pixel; pixels never seen get the overall median."""
        seen = self._counts > 0
        out = np.zeros(self._total.shape, dtype=np.float32)
        if not seen.any():
            return out
        out[seen] = self._total[seen] / self._counts[seen]
        if not seen.all():
            out[~seen] = np.median(out[seen])
        return out
