"""Camera model: ADU -> photons, and the photon-transfer estimate of offset and gain.

Units: raw data in ADU; ``gain_adu_per_e`` in ADU per detected photoelectron;
``read_noise_e`` in electrons rms. "Photons" everywhere in plstream means
detected photoelectrons, ``(ADU - offset) / gain``.

The model of one pixel is ``ADU = offset + gain * (Poisson(mu) + Normal(0, read_noise_e))``,
so its temporal mean ``m`` and variance ``v`` lie on the photon-transfer line

    v = gain * m + c,    c = gain**2 * read_noise_e**2 - gain * offset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray
from scipy import stats

__all__ = ["CameraEstimateError", "CameraModel", "estimate_camera_model", "resolve_camera_model", "to_photons"]

logger = logging.getLogger(__name__)

Origin = Literal["metadata", "config", "estimated"]
FIELDS = ("offset_adu", "gain_adu_per_e", "read_noise_e")

_MIN_FRAMES = 10
_N_BINS = 24
_CLIP_SIGMA = 4.0
_MIN_PIXELS = 200


class CameraEstimateError(ValueError):
    """The frames cannot give the camera's offset and gain (too few, or the illumination is too flat)."""


@dataclass(frozen=True)
class CameraModel:
    """Offset, conversion gain and read noise of the camera.

    Attributes
    ----------
    offset_adu : float
        Baseline (dark level) in ADU.
    gain_adu_per_e : float
        Conversion gain, ADU per detected photoelectron (> 0).
    read_noise_e : float
        Read noise, electrons rms (>= 0).
    origin : dict
        Field name -> ``"metadata"``, ``"config"`` or ``"estimated"``.
    """

    offset_adu: float
    gain_adu_per_e: float
    read_noise_e: float
    origin: dict[str, Origin] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain_adu_per_e) and self.gain_adu_per_e > 0):
            raise ValueError(f"camera gain_adu_per_e must be a positive number, got {self.gain_adu_per_e}")
        if not (math.isfinite(self.read_noise_e) and self.read_noise_e >= 0):
            raise ValueError(f"camera read_noise_e must be >= 0 electrons, got {self.read_noise_e}")
        if not math.isfinite(self.offset_adu):
            raise ValueError(f"camera offset_adu must be finite, got {self.offset_adu}")

    @property
    def read_variance_photons(self) -> float:
        """Read-noise variance in photons² per pixel (``read_noise_e**2``)."""
        return float(self.read_noise_e) ** 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serializable) of the model and the origin of each value."""
        return {
            "offset_adu": float(self.offset_adu),
            "gain_adu_per_e": float(self.gain_adu_per_e),
            "read_noise_e": float(self.read_noise_e),
            "origin": dict(self.origin),
        }


def to_photons(raw: np.ndarray, camera: CameraModel, out: np.ndarray | None = None) -> np.ndarray:
    """Convert raw ADU to photons, ``(raw - offset_adu) / gain_adu_per_e``.

    Parameters
    ----------
    raw : ndarray
        Raw data (any integer or float dtype, 1-D or more).
    camera : CameraModel
        The camera model.
    out : ndarray of float32, optional
        Destination with the shape of ``raw``; nothing is allocated when given
        (it must be C-contiguous unless ``raw`` is 2-D).

    Returns
    -------
    ndarray of float32
        Photons per pixel (``out`` when given).
    """
    raw = np.asarray(raw)
    if raw.dtype.kind not in "uif":
        raise ValueError(f"raw data must be numeric (integer or float), got dtype {raw.dtype}")
    if raw.ndim == 0:
        raise ValueError("raw data must be an array with at least one dimension")
    if out is None:
        out = np.empty(raw.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != raw.shape:
        raise ValueError(f"out must be float32 with shape {raw.shape}, got {out.dtype} {out.shape}")
    if raw.ndim == 2:
        raw2, out2 = raw, out
    else:
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous for data that is not 2-D")
        raw2 = raw.reshape(-1, raw.shape[-1]) if raw.size else raw.reshape(0, 0)
        out2 = out.reshape(raw2.shape)
    _adu_to_photons(raw2, float(camera.offset_adu), float(camera.gain_adu_per_e), out2)
    return out


@njit(cache=True, nogil=True)
def _adu_to_photons(raw, offset, gain, out):  # pragma: no cover - numba
    """Kernel: ``out[r, c] = (raw[r, c] - offset) / gain`` in float64, stored as float32."""
    for r in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            out[r, c] = (np.float64(raw[r, c]) - offset) / gain


# ---------------------------------------------------------------------------- photon transfer
def _median_bias(n_frames: int) -> float:
    """Median of the sample variance of n Gaussian samples, in units of the true variance."""
    dof = n_frames - 1
    return float(stats.chi2.median(dof) / dof)


def _bin_medians(mean: np.ndarray, var: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-count bins by mean: bin mean, unbiased median variance, pixel count."""
    edges = np.quantile(mean, np.linspace(0.0, 1.0, _N_BINS + 1))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, _N_BINS - 1)
    order = np.argsort(which, kind="stable")
    splits = np.searchsorted(which[order], np.arange(1, _N_BINS))
    x, y, n = [], [], []
    for idx in np.split(order, splits):
        if idx.size >= 10:
            x.append(mean[idx].mean())
            y.append(np.median(var[idx]) / _median_bias(n_frames))
            n.append(idx.size)
    return np.array(x), np.array(y), np.array(n, dtype=float)


def _weighted_line(x: np.ndarray, y: np.ndarray, n: np.ndarray, n_frames: int) -> tuple[float, float, float]:
    """Weighted LS line through bin medians: slope, intercept, slope standard error."""
    if x.size < 3 or np.ptp(x) <= 0:
        return math.nan, math.nan, math.inf
    # A bin median's variance ~ (pi/2) * (2/(K-1)) * v**2 / n.
    rel_var = math.pi / 2 * 2.0 / (n_frames - 1)
    w = n / (rel_var * np.maximum(y, 1e-12) ** 2)
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    sxx = float((w * (x - xm) ** 2).sum())
    slope = float((w * (x - xm) * (y - ym)).sum() / sxx)
    return slope, float(ym - slope * xm), math.sqrt(1.0 / sxx)


def estimate_camera_model(
    frames: np.ndarray, *, assumed_read_noise_e: float = 1.5, fallback: bool = True
) -> CameraModel:
    """Estimate offset and gain from the photon-transfer curve of a raw frame stack.

    Per pixel, the temporal mean and variance are computed. Pixels are binned
    by mean (equal-count bins); the median variance per bin (divided by the
    median of a chi-square over its dof, which makes it an unbiased variance)
    is fitted with a weighted line ``var = gain*mean + c``. Pixels whose
    variance exceeds the fitted line by more than 4 standard deviations of a
    sample variance (blinking or moving spots, hot pixels) or falls below it by
    more are dropped and the fit is repeated (3 rounds, starting from a
    Theil-Sen line through the bin medians). The offset then follows from the
    intercept and the assumed read noise: ``offset = (gain**2 r**2 - c) / gain``.

    Flat illumination (the true spread of pixel means is below the
    noise of a pixel mean, or the slope is uncertain by more than 10 %) cannot
    give a slope. Then the fallback is ``gain = 1 ADU/e-`` and the offset that
    reproduces the observed background mean and variance,
    ``offset = mean - (var - r**2)``; the background level and its noise (what
    detection thresholds depend on) stay right, photon numbers are only
    relative. A WARNING asks the user to set ``camera.offset_adu`` and
    ``camera.gain_adu_per_e``.

    Parameters
    ----------
    frames : (K, H, W) array
        Raw frames in ADU, K >= 10 (20-100 typical).
    assumed_read_noise_e : float
        Read noise (electrons rms) used for the intercept; returned as is.
    fallback : bool
        False: raise :class:`CameraEstimateError` instead of falling back to
        gain 1 when there is no photon-transfer slope (the caller then works
        in ADU with a measured noise model, :mod:`plstream.analysis.signal`).

    Returns
    -------
    CameraModel
        With ``origin`` "estimated" for the three fields.

    Raises
    ------
    ValueError
        If ``frames`` is not 3-D.
    CameraEstimateError
        If it has fewer than 10 frames (or, with ``fallback=False``, no slope).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be a (K, H, W) stack of raw frames, got shape {frames.shape}")
    k = frames.shape[0]
    if k < _MIN_FRAMES:
        raise CameraEstimateError(
            f"need at least {_MIN_FRAMES} frames to estimate the camera gain, got {k}; "
            "buffer more frames (camera.estimate_frames) or set camera.offset_adu and camera.gain_adu_per_e"
        )
    if frames.shape[1] * frames.shape[2] == 0:
        raise ValueError(f"frames are empty, shape {frames.shape}")
    r2 = float(assumed_read_noise_e) ** 2
    mean: NDArray[np.float64] = np.empty(frames.shape[1:], dtype=np.float64)  # (H, W), then raveled
    var = np.empty_like(mean)
    for r0 in range(0, frames.shape[1], 32):  # row blocks keep the float64 copy small
        block = frames[:, r0 : r0 + 32].astype(np.float64)
        mean[r0 : r0 + 32] = block.mean(axis=0)
        var[r0 : r0 + 32] = block.var(axis=0, ddof=1)
    mean, var = mean.ravel(), var.ravel()
    ok = np.isfinite(mean) & np.isfinite(var) & (var > 0)
    rel_sd = math.sqrt(2.0 / (k - 1))

    slope, c, slope_se, flat = math.nan, math.nan, math.inf, True
    if np.count_nonzero(ok) >= _MIN_PIXELS:
        m, v = mean[ok], var[ok]
        x, y, _ = _bin_medians(m, v, k)
        if x.size >= 3 and np.ptp(x) > 0:
            # Robust start: Theil-Sen through the bin medians ignores bins full of blinking spots.
            res = stats.theilslopes(y, x)
            slope, c = float(res.slope), float(res.intercept)
        keep = np.ones(m.shape, dtype=bool)
        for _ in range(3):
            if not (math.isfinite(slope) and slope > 0):
                break
            pred = np.maximum(slope * m + c, 1e-12)
            keep = np.abs(v - pred) <= _CLIP_SIGMA * rel_sd * pred
            if np.count_nonzero(keep) < _MIN_PIXELS:
                break
            slope, c, slope_se = _weighted_line(*_bin_medians(m[keep], v[keep], k), k)
        if np.count_nonzero(keep) >= _MIN_PIXELS:
            noise_var_of_mean = float(np.median(v[keep])) / k
            flat = float(np.var(m[keep])) - noise_var_of_mean < noise_var_of_mean

    origin: dict[str, Origin] = dict.fromkeys(FIELDS, "estimated")
    if flat or not (math.isfinite(slope) and slope > 0) or slope_se > 0.1 * slope:
        if not fallback:
            raise CameraEstimateError(
                f"no photon-transfer slope in these {k} frames (the illumination is too flat); "
                "set camera.offset_adu and camera.gain_adu_per_e to work in photons"
            )
        m0 = float(np.median(mean[ok])) if ok.any() else float(np.nanmedian(mean))
        v0 = float(np.median(var[ok])) / _median_bias(k) if ok.any() else 0.0
        offset = m0 - max(v0 - r2, 0.0)
        offset = offset if math.isfinite(offset) else 0.0
        logger.warning(
            "cannot estimate the camera gain from these %d frames: the illumination is too flat "
            "for a photon-transfer slope. Assuming gain 1 ADU/e- and offset %.1f ADU (keeps the "
            "background noise right; photon numbers are only relative). Set camera.offset_adu and "
            "camera.gain_adu_per_e in the config.",
            k,
            offset,
        )
        return CameraModel(offset, 1.0, float(assumed_read_noise_e), origin)
    gain = slope
    offset = (gain * gain * r2 - c) / gain
    logger.info("photon-transfer estimate: gain %.4f +- %.4f ADU/e-, offset %.2f ADU", gain, slope_se, offset)
    return CameraModel(float(offset), float(gain), float(assumed_read_noise_e), origin)


# ---------------------------------------------------------------------------- resolution
def resolve_camera_model(
    metadata: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    estimate: Callable[[], CameraModel] | None,
) -> CameraModel:
    """Choose each camera value: config (not None) > stream metadata > estimate.

    Parameters
    ----------
    metadata : dict or None
        The stream's camera description (keys ``offset_adu``,
        ``gain_adu_per_e``, ``read_noise_e``; missing or None = unknown).
    config : dict
        The same keys from the settings; None = "auto".
    estimate : callable or None
        Returns an estimated model; called at most once, only if a value is
        missing from both config and metadata.

    Returns
    -------
    CameraModel
        ``origin`` records where each value came from.

    Raises
    ------
    ValueError
        If a value is missing and no estimate is available (names the setting).
    """
    metadata = metadata or {}
    values: dict[str, float] = {}
    origin: dict[str, Origin] = {}
    missing = []
    for name in FIELDS:
        if config.get(name) is not None:
            values[name], origin[name] = float(config[name]), "config"
        elif metadata.get(name) is not None:
            values[name], origin[name] = float(metadata[name]), "metadata"
        else:
            missing.append(name)
    if missing:
        if estimate is None:
            raise ValueError(
                "camera " + ", ".join(missing) + " unknown (not in the stream metadata) and no frames to "
                "estimate it from; set " + " and ".join(f"camera.{m}" for m in missing) + " in the config"
            )
        estimated = estimate()
        for name in missing:
            values[name], origin[name] = float(getattr(estimated, name)), "estimated"
    return CameraModel(origin=origin, **values)
