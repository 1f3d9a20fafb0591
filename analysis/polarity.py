"""Which way the particles stand out: bright on a dark background, or dark on a bright field.

:func:`decide_polarity` looks at the first frames the way a person would: it
removes the smooth illumination, filters with blob detectors at a few scales
(scale-normalised Laplacian of Gaussian) and collects the significant
extrema of each sign that are *blobs* (both Hessian eigenvalues of the same
sign and of similar size), not edges, scratches or lines. The side whose
blobs are clearly stronger wins; with no clear winner (pure noise, pure
texture) it says "bright", the classic case, and says why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["PolarityDecision", "decide_polarity"]

logger = logging.getLogger(__name__)

_SCALES_PX = (1.0, 2.0, 4.0)
_Z_MIN = 6.0  # a blob must stand out this many (robust) noise SDs of its filter
_BLOB_RATIO = 0.3  # smaller / larger Hessian eigenvalue of a blob (a line is near 0)
_WIN = 3.0  # the winning side's score must be this many times the other's
_MIN_BLOBS = 3
_TILE_PX = 16
_MAX_SIDE_PX = 512  # larger frames are judged on their central crop


@dataclass(frozen=True)
class PolarityDecision:
    """What the particles look like.

    Attributes
    ----------
    polarity : "bright" or "dark"
    origin : "settings" or "auto"
    bright_blobs, dark_blobs : int
        Significant blobs of each sign in the first frame(s) (auto only).
    bright_score, dark_score : float
        Their summed excess significance (auto only).
    reason : str
        The decision in words.
    """

    polarity: Literal["bright", "dark"]
    origin: Literal["settings", "auto"]
    bright_blobs: int = 0
    dark_blobs: int = 0
    bright_score: float = 0.0
    dark_score: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "polarity": self.polarity,
            "polarity_origin": self.origin,
            "polarity_reason": self.reason,
            "polarity_blobs": {"bright": self.bright_blobs, "dark": self.dark_blobs},
            "polarity_scores": {"bright": round(self.bright_score, 2), "dark": round(self.dark_score, 2)},
        }


def _crop(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape
    r0 = max(0, (h - _MAX_SIDE_PX) // 2)
    c0 = max(0, (w - _MAX_SIDE_PX) // 2)
    return frame[r0 : r0 + _MAX_SIDE_PX, c0 : c0 + _MAX_SIDE_PX]


def _smooth_background(image: np.ndarray) -> np.ndarray:
    """Tile medians (16 px) interpolated back: the illumination, not the particles."""
    h, w = image.shape
    ny, nx = max(1, h // _TILE_PX), max(1, w // _TILE_PX)
    rows = np.array_split(np.arange(h), ny)
    cols = np.array_split(np.arange(w), nx)
    tiles = np.array([[np.median(image[r[0] : r[-1] + 1, c[0] : c[-1] + 1]) for c in cols] for r in rows])
    return cv2.resize(tiles.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)


def _blob_scores(image: np.ndarray) -> tuple[int, int, float, float]:
    """(bright blobs, dark blobs, bright score, dark score) of one frame."""
    residual = image - _smooth_background(image)
    counts = [0, 0]
    scores = [0.0, 0.0]
    for scale in _SCALES_PX:
        smooth = ndimage.gaussian_filter(residual, scale)
        # Hessian of the smoothed image: d2/dy2, d2/dx2, d2/dxdy
        hyy = np.gradient(np.gradient(smooth, axis=0), axis=0)
        hxx = np.gradient(np.gradient(smooth, axis=1), axis=1)
        hxy = np.gradient(np.gradient(smooth, axis=0), axis=1)
        response = -(scale**2) * (hxx + hyy)  # > 0 on bright blobs
        spread = 1.4826 * np.median(np.abs(response - np.median(response)))
        if not spread > 0:
            continue
        z = response / spread
        size = 2 * math.ceil(scale) + 1
        border = math.ceil(3 * scale)
        for side, sign in ((0, 1.0), (1, -1.0)):
            zs = sign * z
            peaks = (zs == ndimage.maximum_filter(zs, size=size)) & (zs > _Z_MIN)
            peaks[:border] = peaks[-border:] = False
            peaks[:, :border] = peaks[:, -border:] = False
            r, c = np.nonzero(peaks)
            if r.size == 0:
                continue
            a, b, d = hxx[r, c], hyy[r, c], hxy[r, c]
            root = np.sqrt((a - b) ** 2 + 4 * d * d)
            l1, l2 = 0.5 * (a + b + root), 0.5 * (a + b - root)  # l1 >= l2
            # a bright blob has both eigenvalues negative, a dark one both positive
            big, small = (np.abs(l2), np.abs(l1)) if sign > 0 else (np.abs(l1), np.abs(l2))
            same_sign = (l1 < 0) if sign > 0 else (l2 > 0)
            blob = same_sign & (small >= _BLOB_RATIO * np.maximum(big, 1e-300))
            counts[side] += int(np.count_nonzero(blob))
            scores[side] += float(np.sum(np.minimum(zs[r, c][blob] - _Z_MIN, 50.0)))
    return counts[0], counts[1], scores[0], scores[1]


def decide_polarity(setting: str, frames: list[np.ndarray]) -> PolarityDecision:
    """The particles' contrast: the setting, or for ``"auto"`` judged from the first frames.

    Parameters
    ----------
    setting : str
        ``detection.polarity``: ``"auto"``, ``"bright"`` or ``"dark"``.
    frames : list of (H, W) arrays
        The first raw frames (at most three are looked at).

    Returns
    -------
    PolarityDecision
    """
    if setting in ("bright", "dark"):
        return PolarityDecision(setting, "settings", reason=f"detection.polarity = {setting!r}")  # type: ignore[arg-type]
    if setting != "auto":
        raise ValueError(f'detection.polarity must be "auto", "bright" or "dark", got {setting!r}')
    nb = nd = 0
    sb = sd = 0.0
    for frame in frames[:3]:
        image = _crop(np.asarray(frame, dtype=np.float64))
        if min(image.shape) < 16 or not np.isfinite(image).all():
            continue
        b, d, s1, s2 = _blob_scores(image)
        nb, nd, sb, sd = nb + b, nd + d, sb + s1, sd + s2
    if nd >= _MIN_BLOBS and sd > _WIN * sb:
        polarity: Literal["bright", "dark"] = "dark"
        reason = f"auto: {nd} dark blobs outweigh {nb} bright ones (score {sd:.0f} vs {sb:.0f})"
    elif nb >= _MIN_BLOBS and sb > _WIN * sd:
        polarity = "bright"
        reason = f"auto: {nb} bright blobs outweigh {nd} dark ones (score {sb:.0f} vs {sd:.0f})"
    else:
        polarity = "bright"
        reason = (
            f"auto: no clear contrast in the first frames ({nb} bright, {nd} dark blobs; score {sb:.0f} vs "
            f'{sd:.0f}); taking "bright". Set detection.polarity if the particles are dark.'
        )
    decision = PolarityDecision(polarity, "auto", nb, nd, sb, sd, reason)
    logger.info("particle polarity %s (%s)", polarity, reason)
    return decision
