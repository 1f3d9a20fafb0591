"""Compile the numba kernels before a live source starts.

A live camera cannot wait: if the first frames arrived while numba compiles
(tens of seconds on a fresh install; kernels are cached on disk afterwards),
they would queue up or be dropped. :func:`compile_kernels` runs the whole
per-frame analysis on a few tiny synthetic frames so every kernel is ready.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.camera import CameraModel
from plstream.config import Settings

__all__ = ["compile_kernels"]

_SIZE = 48
_SPOTS = ((14.3, 15.6), (33.2, 30.7), (20.5, 36.1), (36.8, 12.4))


def _synthetic_frame(rng: np.random.Generator, shift: float) -> np.ndarray:
    edges = np.arange(_SIZE + 1) - 0.5
    image = np.full((_SIZE, _SIZE), 10.0)
    for x, y in _SPOTS:
        ex = np.diff(0.5 * erf((edges - x - shift) / (np.sqrt(2) * 1.3)))
        ey = np.diff(0.5 * erf((edges - y) / (np.sqrt(2) * 1.3)))
        image += 1500.0 * np.outer(ey, ex)
    return (rng.poisson(image) + 100).astype(np.uint16)


def compile_kernels() -> None:
    """Run the analysis on a few synthetic frames (triggers numba compilation or cache loading)."""
    rng = np.random.default_rng(0)
    camera = CameraModel(offset_adu=100.0, gain_adu_per_e=1.0, read_noise_e=1.0, origin={})
    analyzer = StreamingAnalyzer(Settings(), (_SIZE, _SIZE), camera)
    for t in range(4):
        analyzer.process(t, float(t), _synthetic_frame(rng, 0.1 * t))
    analyzer.finish()
