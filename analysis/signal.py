"""The signal model: raw ADU -> the analysis's working units, and its results -> output units.

Every estimator of the analysis (detection significance, Poisson-MLE fits and
their CRLB, photometry variances, the on/off test) assumes that a pixel's
working value ``w`` has variance ``w + read_variance`` and that particles
*add* to the background. :class:`SignalModel` makes any movie look like that:

- **Poisson** (a known camera, bright particles): ``w = (raw - offset) / gain``
  are detected photons; outputs are photons. This is the classic path and is
  exactly what plstream did before the signal model existed.
- **Gaussian-equivalent** (dark particles, or a camera whose offset and gain
  are unknown): the pixel noise ``sigma`` (ADU) at the background level ``L``
  is taken as constant, and the data are mapped to
  ``w = s (raw - L) / g + B`` with ``s = +1`` (bright) or ``-1`` (dark),
  ``g = sigma / sqrt(B)`` and a large working background ``B``
  (:data:`WORKING_BACKGROUND`). Then the background has mean ``B`` and
  variance ``B`` in working units (a Poisson model of it is exact to first
  order), particles are positive bumps whatever their contrast, and a
  particle's own signal changes the modelled variance by well under 1 % (so
  the noise is, as assumed, the same everywhere). Significances,
  uncertainties (px) and SNRs are unit-free and come out right; photon-like
  numbers are converted back when written.

Outputs (:meth:`SignalModel.amounts_out`, :meth:`SignalModel.levels_out`):
*amounts* (aperture and PSF-weighted intensities, fitted amplitudes) are the
particle's contrast, positive in either polarity (for dark particles: the
light they remove); *levels* (backgrounds, the mean image) are the light level
in the original orientation. Units are photons when the camera is known, else
ADU (:attr:`SignalModel.units`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from plstream.analysis.camera import CameraModel

__all__ = ["WORKING_BACKGROUND", "SignalModel", "pixel_noise_adu", "signal_model"]

logger = logging.getLogger(__name__)

Polarity = Literal["bright", "dark"]

WORKING_BACKGROUND = 1.0e6
"""Background level ``B`` of the Gaussian-equivalent working units (its variance is ``B`` too)."""

_NOISE_FRAMES = 8  # frames whose pixel noise is measured (median taken)
_LAPLACE_NORM = 6.0  # sqrt(sum of the squared weights of the 3x3 Laplacian mask)


@dataclass(frozen=True)
class SignalModel:
    """How raw frames become working units, and results become output units.

    Attributes
    ----------
    offset_adu, adu_per_unit : float
        ``working = (raw - offset_adu) / adu_per_unit``; ``adu_per_unit`` is
        negative for dark particles (the contrast is inverted).
    read_variance : float
        Read-noise variance in working units² (0 for the Gaussian-equivalent model).
    polarity : str
        ``"bright"`` or ``"dark"``.
    units : str
        ``"photons"`` or ``"ADU"``: what the written intensities and backgrounds are in.
    amount_scale : float
        Output amount = ``amount_scale * working amount`` (> 0).
    level_offset, level_scale : float
        Output level = ``level_offset + level_scale * working level``.
    noise : str
        ``"poisson"`` (camera model: shot + read noise) or ``"gaussian"``
        (the same noise in every pixel, ``noise_adu``).
    noise_adu : float or None
        Pixel noise, ADU rms, of the Gaussian model (None for Poisson).
    level_adu : float or None
        The background level the Gaussian model is centred on, ADU.
    camera : CameraModel or None
        The camera model, when it is known.
    """

    offset_adu: float
    adu_per_unit: float
    read_variance: float
    polarity: Polarity
    units: Literal["photons", "ADU"]
    amount_scale: float
    level_offset: float
    level_scale: float
    noise: Literal["poisson", "gaussian"]
    noise_adu: float | None = None
    level_adu: float | None = None
    camera: CameraModel | None = None

    def __post_init__(self) -> None:
        for name in ("offset_adu", "adu_per_unit", "read_variance", "amount_scale", "level_offset", "level_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"signal model {name} must be finite, got {getattr(self, name)}")
        if self.adu_per_unit == 0 or self.amount_scale <= 0 or self.read_variance < 0:
            raise ValueError("signal model needs adu_per_unit != 0, amount_scale > 0 and read_variance >= 0")

    @classmethod
    def from_camera(cls, camera: CameraModel) -> SignalModel:
        """The classic model: bright particles, working units = detected photons."""
        return cls(
            offset_adu=float(camera.offset_adu),
            adu_per_unit=float(camera.gain_adu_per_e),
            read_variance=float(camera.read_variance_photons),
            polarity="bright",
            units="photons",
            amount_scale=1.0,
            level_offset=0.0,
            level_scale=1.0,
            noise="poisson",
            camera=camera,
        )

    @property
    def identity(self) -> bool:
        """Working units are the output units (no conversion of the results)."""
        return self.amount_scale == 1.0 and self.level_offset == 0.0 and self.level_scale == 1.0

    def amounts_out(self, values: np.ndarray) -> np.ndarray:
        """Intensities / amplitudes in output units (a new array unless the model is the identity)."""
        return values if self.identity else values * np.asarray(self.amount_scale, dtype=values.dtype)

    def levels_out(self, values: np.ndarray) -> np.ndarray:
        """Backgrounds / images in output units (a new array unless the model is the identity)."""
        if self.identity:
            return values
        dtype = values.dtype
        return (values * np.asarray(self.level_scale, dtype=dtype) + np.asarray(self.level_offset, dtype=dtype)).astype(
            dtype, copy=False
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in the result file's ``analysis_json``)."""
        return {
            "polarity": self.polarity,
            "units": self.units,
            "noise_model": self.noise,
            "noise_adu": self.noise_adu,
            "level_adu": self.level_adu,
            "working_offset_adu": self.offset_adu,
            "working_adu_per_unit": self.adu_per_unit,
            "working_read_variance": self.read_variance,
            "amount_scale": self.amount_scale,
            "level_offset": self.level_offset,
            "level_scale": self.level_scale,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SignalModel:
        """The model :meth:`to_dict` described (the camera is not restored)."""
        return cls(
            offset_adu=float(values["working_offset_adu"]),
            adu_per_unit=float(values["working_adu_per_unit"]),
            read_variance=float(values["working_read_variance"]),
            polarity=values["polarity"],
            units=values["units"],
            amount_scale=float(values["amount_scale"]),
            level_offset=float(values["level_offset"]),
            level_scale=float(values["level_scale"]),
            noise=values["noise_model"],
            noise_adu=values.get("noise_adu"),
            level_adu=values.get("level_adu"),
        )

    def to_working(self, raw: np.ndarray) -> np.ndarray:
        """Raw ADU -> working units, float32 (for exports; the analyzer converts in its kernels)."""
        return ((np.asarray(raw, dtype=np.float64) - self.offset_adu) / self.adu_per_unit).astype(np.float32)


def pixel_noise_adu(frame: np.ndarray) -> float:
    """Pixel noise of one frame, ADU rms, robust and spatial (from the frame itself).

    The 3x3 Laplacian ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` cancels any
    locally linear background (Immerkær 1996); its output has 36 times the
    pixel variance for independent noise. Its median absolute deviation
    (times 1.4826, for a Gaussian) ignores the few pixels on particles,
    edges or scratches.
    """
    f = np.asarray(frame, dtype=np.float64)
    if f.ndim != 2 or min(f.shape) < 3:
        raise ValueError(f"a frame of at least 3x3 px is needed to measure its noise, got shape {f.shape}")
    lap = (
        f[:-2, :-2]
        + f[:-2, 2:]
        + f[2:, :-2]
        + f[2:, 2:]
        - 2.0 * (f[:-2, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] + f[2:, 1:-1])
        + 4.0 * f[1:-1, 1:-1]
    )
    lap = lap[np.isfinite(lap)]
    if lap.size == 0:
        return math.nan
    return float(1.4826 * np.median(np.abs(lap - np.median(lap))) / _LAPLACE_NORM)


def _noise_and_level(frames: list[np.ndarray]) -> tuple[float, float]:
    """Median pixel noise (ADU) and median level (ADU) of the first frames."""
    use = frames[:_NOISE_FRAMES]
    noise = float(np.nanmedian([pixel_noise_adu(f) for f in use]))
    level = float(np.nanmedian([np.nanmedian(np.asarray(f, dtype=np.float64)) for f in use]))
    if not (math.isfinite(noise) and noise > 0):
        # a constant (or quantized-flat) image: any positive noise keeps the model defined; nothing will be found
        spread = float(np.nanstd(np.asarray(use[0], dtype=np.float64)))
        noise = spread if math.isfinite(spread) and spread > 0 else 1.0
    if not math.isfinite(level):
        level = 0.0
    return noise, level


def signal_model(camera: CameraModel | None, polarity: Polarity, frames: list[np.ndarray]) -> SignalModel:
    """The signal model for a run.

    Parameters
    ----------
    camera : CameraModel or None
        The camera (offset, gain, read noise) when known; None works in ADU
        with the pixel noise measured from ``frames``.
    polarity : "bright" or "dark"
        The particles' contrast.
    frames : list of (H, W) arrays
        The first raw frames (ADU): the noise and the background level are measured on them.

    Returns
    -------
    SignalModel
        Poisson for a known camera with bright particles, else the Gaussian-equivalent model.
    """
    if camera is not None and polarity == "bright":
        return SignalModel.from_camera(camera)
    noise, level = _noise_and_level(frames)
    if camera is not None:
        # shot + read noise of the bright field itself, from the camera model
        electrons = max((level - camera.offset_adu) / camera.gain_adu_per_e, 0.0)
        noise = camera.gain_adu_per_e * math.sqrt(electrons + camera.read_variance_photons) or noise
    sign = 1.0 if polarity == "bright" else -1.0
    g = noise / math.sqrt(WORKING_BACKGROUND)
    offset = level - sign * WORKING_BACKGROUND * g
    if camera is not None:
        gain, cam_offset = float(camera.gain_adu_per_e), float(camera.offset_adu)
        units: Literal["photons", "ADU"] = "photons"
        amount_scale, level_offset, level_scale = g / gain, (offset - cam_offset) / gain, sign * g / gain
    else:
        units = "ADU"
        amount_scale, level_offset, level_scale = g, offset, sign * g
    model = SignalModel(
        offset_adu=offset,
        adu_per_unit=sign * g,
        read_variance=0.0,
        polarity=polarity,
        units=units,
        amount_scale=amount_scale,
        level_offset=level_offset,
        level_scale=level_scale,
        noise="gaussian",
        noise_adu=noise,
        level_adu=level,
        camera=camera,
    )
    logger.info(
        "signal model: %s particles, Gaussian pixel noise %.4g ADU at level %.6g ADU, results in %s",
        polarity,
        noise,
        level,
        units,
    )
    return model
