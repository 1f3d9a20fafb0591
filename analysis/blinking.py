"""Streaming ON/OFF state of each spot, decided frame by frame."""

from __future__ import annotations

import numpy as np

from plstream.analysis.kernels.on_off import classify_on_off
from plstream.config import BlinkingSettings

__all__ = ["OnOffClassifier"]


class OnOffClassifier:
    """Keeps each spot's running ON level and classifies every new frame.

    The threshold sits at a fraction (default one half) of the spot's own ON
    level, so a frame is ON when the particle emitted for more than about half of
    the exposure; it must also be significant against the photometric noise
    (shot noise of background and read noise), so a dark spot never flickers ON
    on noise. No trace percentiles are used: the decision for frame t uses only
    frames up to t, as a stream requires.

    Parameters
    ----------
    settings : BlinkingSettings
    """

    def __init__(self, settings: BlinkingSettings) -> None:
        self._settings = settings
        self._on_level = np.full(0, np.nan)

    @property
    def on_level(self) -> np.ndarray:
        """Current ON level per spot, photons (NaN before the spot was seen ON)."""
        return self._on_level

    def restore(self, on_level: np.ndarray) -> None:
        """Start from saved ON levels (resuming a run), photons per spot (NaN: never ON yet)."""
        self._on_level = np.array(on_level, dtype=np.float64, copy=True)

    def classify(self, intensity: np.ndarray, noise_sigma: np.ndarray, state_out: np.ndarray) -> np.ndarray:
        """Classify one frame.

        Parameters
        ----------
        intensity : (S,) array
            Background-subtracted intensity, photons. S may grow between calls.
        noise_sigma : (S,) array
            Intensity standard deviation of an OFF spot, photons.
        state_out : (S,) int8 array
            Written: 1 ON, 0 OFF, -1 not measurable.

        Returns
        -------
        state_out
        """
        n = intensity.shape[0]
        if n > self._on_level.shape[0]:
            grown = np.full(max(n, 2 * self._on_level.shape[0]), np.nan)
            grown[: self._on_level.shape[0]] = self._on_level
            self._on_level = grown
        s = self._settings
        classify_on_off(
            np.ascontiguousarray(intensity, dtype=np.float64),
            np.ascontiguousarray(noise_sigma, dtype=np.float64),
            self._on_level[:n],
            s.on_level_fraction,
            s.min_significance,
            s.level_rate_up,
            s.level_rate_down,
            state_out,
        )
        return state_out
