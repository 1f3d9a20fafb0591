"""The simulated camera: a seeded, physically honest movie of blinking single emitters.

It is the project's test oracle. Each frame is reproducible on its own
(``render_frame(t)`` draws its noise from ``SeedSequence([seed, t])``), and
the ground truth (:class:`~plstream.acquire_adapters.simulated.truth.SimulationTruth`)
says where every emitter is and how many photons it gave in every frame.

A frame, in order: each emitter with ``on_fraction[t, e] > 0`` at its
position in frame t (drift and rotation, see
:meth:`SimulationTruth.positions_in_frame`) contributes
``brightness[e] * on_fraction[t, e]`` expected photons spread by a
pixel-integrated Gaussian PSF, ``photons * dEx * dEy`` with
``dE(x) = 1/2 [erf((x - mu + 1/2) / (sqrt(2) sigma)) - erf((x - mu - 1/2) / (sqrt(2) sigma))]``,
drawn within ``±ceil(5 sigma)`` px of its centre; plus the background map
(with ``contrast="dark"`` the spots take those photons away from the
background instead: dark particles on a bright field); then Poisson shot
noise; electrons times gain; plus Normal(0, read noise x gain); plus offset;
rounded and clipped to the output type.

Model details (the truth records exactly what was simulated):

- blinking runs in continuous time: alternating ON/OFF dwells from
  truncated power laws ``p(t) ∝ t**-m exp(-t / truncation)``, t >= min_dwell
  (exact rejection sampling), random initial state (ON with probability
  1/2), photobleaching once the total ON time exceeds an exponential budget.
  ``on_fraction[t, e]`` is the ON time within frame t's exposure, so
  partly-on frames occur naturally. Every emitter is ON for at least one
  frame-equivalent in total: an emitter whose draw falls short is redrawn
  (the population is conditioned on being detectable);
- drift and rotation are smooth (linear trend plus three low-frequency
  sinusoids, random per seed), exactly zero at frame 0, scaled so the
  largest ``|dx|``/``|dy|`` is ``drift_max_px`` and the largest angle
  ``rotation_max_deg``;
- the Gaussian illumination background is quantized to at most 128 levels
  (steps of a few hundredths of a photon for the defaults): for each level
  the exact distribution of a background-only pixel's ADU value is tabulated,
  which makes a 512 x 512 frame with 300 emitters take ~3 ms on one core;
- random numbers: xoshiro256** seeded from ``SeedSequence([seed, t])`` for
  frame t's noise; the truth draws from ``SeedSequence(seed).spawn(5)``.

Examples
--------
>>> camera = SimulatedCamera(SimulationParams(shape=(64, 64), n_frames=10, n_emitters=3), seed=1)
>>> frames = [frame.data for frame in camera]
>>> bool((frames[4] == camera.render_frame(4)).all())
True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from plstream.acquire_adapters.base import Frame
from plstream.acquire_adapters.simulated import _kernels as _sim_kernels
from plstream.acquire_adapters.simulated import _model as _sim_model
from plstream.acquire_adapters.simulated.truth import SimulationTruth, save_truth

__all__ = ["SimulatedCamera", "SimulationParams", "write_movie"]

logger = logging.getLogger(__name__)

_DTYPES = ("uint8", "uint16")
_CONTRASTS = ("bright", "dark")


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of a simulated movie; the defaults are the project's acceptance movie.

    Attributes
    ----------
    shape : tuple of int
        (rows, columns) px.
    n_frames, n_emitters : int
    photons_per_frame : float
        Mean (over emitters) detected photons of a fully-on emitter per frame.
    brightness_spread : float
        Lognormal sigma of the per-emitter brightness (mean kept at ``photons_per_frame``).
    background_photons : float
        Mean background photons per pixel per frame at the illumination centre.
    illumination_edge_ratio : float
        Gaussian illumination: background at the image corners relative to the centre (0 < r <= 1).
    psf_sigma_px : float
        Gaussian PSF standard deviation, px.
    drift_max_px : float
        Largest ``|dx|`` or ``|dy|`` of the smooth drift over the movie, px.
    rotation_max_deg : float
        Largest ``|angle|`` of the smooth rotation about the image centre, degrees (0 = none).
    contrast : str
        ``"bright"``: emitters add their photons to the background (PL);
        ``"dark"``: particles take ``brightness * on_fraction`` photons away
        from the background (dark particles on a bright field, as in
        bright-field or reflected-light microscopy; ``background_photons``
        must then be large).
    on_exponent, off_exponent : float
        Power-law exponents m of the ON and OFF dwell times, ``p(t) ∝ t**-m``.
    min_dwell_frames : float
        Shortest dwell time, frames.
    on_truncation_frames, off_truncation_frames : float
        Exponential cut-off of the ON and OFF power laws, frames (``inf`` = none; needs m > 1).
    bleach_on_frames : float
        Mean total ON time before photobleaching (exponential), frames (``inf`` = never).
    offset_adu : float
        Camera offset (bias), ADU.
    gain_adu_per_e : float
        ADU per photo-electron.
    read_noise_e : float
        Read noise, electrons rms.
    dtype : str
        ``"uint16"`` or ``"uint8"``; values are clipped to its range.
    frame_rate_hz : float
        Frames per second (timestamps and pacing).
    min_separation_px : float
        Smallest distance between emitters (reference frame), px.
    margin_px : float
        Smallest distance of an emitter from the image edges (reference frame), px.
    """

    shape: tuple[int, int] = (256, 256)
    n_frames: int = 1000
    n_emitters: int = 60
    photons_per_frame: float = 2000.0
    brightness_spread: float = 0.15
    background_photons: float = 20.0
    illumination_edge_ratio: float = 0.7
    psf_sigma_px: float = 1.3
    drift_max_px: float = 3.0
    rotation_max_deg: float = 0.0
    contrast: str = "bright"
    on_exponent: float = 1.6
    off_exponent: float = 1.5
    min_dwell_frames: float = 0.5
    on_truncation_frames: float = 300.0
    off_truncation_frames: float = 300.0
    bleach_on_frames: float = 3000.0
    offset_adu: float = 100.0
    gain_adu_per_e: float = 2.0
    read_noise_e: float = 1.5
    dtype: str = "uint16"
    frame_rate_hz: float = 100.0
    min_separation_px: float = 8.0
    margin_px: float = 8.0

    def __post_init__(self) -> None:
        if len(tuple(self.shape)) != 2 or any(int(v) != v or v < 1 for v in self.shape):
            raise ValueError(f"shape must be (rows, columns) of positive integers, got {self.shape!r}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        for name, low in (("n_frames", 1), ("n_emitters", 0)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        positive = (
            "psf_sigma_px",
            "min_dwell_frames",
            "on_truncation_frames",
            "off_truncation_frames",
            "bleach_on_frames",
            "gain_adu_per_e",
            "frame_rate_hz",
            "illumination_edge_ratio",
        )
        non_negative = (
            "photons_per_frame",
            "brightness_spread",
            "background_photons",
            "drift_max_px",
            "rotation_max_deg",
            "on_exponent",
            "off_exponent",
            "offset_adu",
            "read_noise_e",
            "min_separation_px",
            "margin_px",
        )
        for name in positive + non_negative:
            value = float(getattr(self, name))
            if math.isnan(value) or value < 0 or (name in positive and value == 0):
                raise ValueError(f"{name} must be {'> 0' if name in positive else '>= 0'}, got {value!r}")
            object.__setattr__(self, name, value)
        finite = (
            "photons_per_frame",
            "brightness_spread",
            "background_photons",
            "drift_max_px",
            "rotation_max_deg",
            "offset_adu",
            "gain_adu_per_e",
            "read_noise_e",
            "psf_sigma_px",
            "frame_rate_hz",
            "min_dwell_frames",
            "on_exponent",
            "off_exponent",
            "min_separation_px",
            "margin_px",
        )
        for name in finite:
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        if self.illumination_edge_ratio > 1.0:
            raise ValueError(f"illumination_edge_ratio must be in (0, 1], got {self.illumination_edge_ratio}")
        for kind in ("on", "off"):
            if math.isinf(getattr(self, f"{kind}_truncation_frames")) and getattr(self, f"{kind}_exponent") <= 1.0:
                raise ValueError(f"an untruncated power law needs {kind}_exponent > 1; set {kind}_truncation_frames")
        if self.contrast not in _CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(_CONTRASTS)}, got {self.contrast!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain, msgpack-serializable values (``shape`` as a list)."""
        values = dataclasses.asdict(self)
        values["shape"] = list(self.shape)
        return values


def _build(params: SimulationParams, seed: int) -> tuple[SimulationTruth, _sim_model.BackgroundTables]:
    """The truth of a movie and the background tables its noise kernel reads."""
    streams = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(5)]
    rng_pos, rng_bright, rng_blink, rng_drift, rng_rot = streams
    positions = _sim_model.place_emitters(
        rng_pos, params.shape, params.n_emitters, params.min_separation_px, params.margin_px
    )
    brightness = _sim_model.draw_brightness(
        rng_bright, params.n_emitters, params.photons_per_frame, params.brightness_spread
    )
    on_fraction = _sim_model.blink(rng_blink, params.n_frames, params.n_emitters, params)
    drift = np.column_stack([_sim_model.smooth_path(rng_drift, params.n_frames) for _ in range(2)])
    biggest = float(np.max(np.abs(drift)))
    drift = drift * (params.drift_max_px / biggest) if biggest > 0 else np.zeros_like(drift)
    rotation = _sim_model.smooth_path(rng_rot, params.n_frames)
    biggest = float(np.max(np.abs(rotation)))
    rotation = rotation * (params.rotation_max_deg / biggest) if biggest > 0 else np.zeros_like(rotation)
    raw_background = _sim_model.illumination_background(
        params.shape, params.background_photons, params.illumination_edge_ratio
    )
    max_adu = float(np.iinfo(np.dtype(params.dtype)).max)
    tables = _sim_model.background_tables(
        raw_background, params.offset_adu, params.gain_adu_per_e, params.read_noise_e * params.gain_adu_per_e, max_adu
    )
    background = tables[0]
    truth = SimulationTruth(
        params=params,
        seed=seed,
        positions_xy=positions,
        brightness=brightness,
        on_fraction=on_fraction,
        photons=(brightness[None, :] * on_fraction).astype(np.float32),
        drift_xy=drift,
        rotation_deg=rotation,
        background_map=background,
        camera={key: getattr(params, key) for key in ("offset_adu", "gain_adu_per_e", "read_noise_e")},
        psf_sigma_px=params.psf_sigma_px,
    )
    return truth, tables


class SimulatedCamera:
    """A :class:`~plstream.acquire_adapters.base.FrameSource` that renders a seeded simulated movie.

    Parameters
    ----------
    params : SimulationParams
        What to simulate.
    seed : int
        Non-negative seed; the same seed gives the same movie, frame by frame.
    paced : bool
        True: release frame t at ``start + t / frame_rate_hz`` (an absolute
        schedule: lag does not accumulate, and a consumer that falls behind is
        not slept for). False: as fast as possible.
    clock, sleep : callable
        Monotonic clock (seconds) and sleep used for pacing (inject fakes in tests).
    wall_clock : callable
        Epoch clock for the timestamps: frame t gets ``t0 + t / frame_rate_hz``
        with ``t0 = wall_clock()`` when iteration starts.
    """

    def __init__(
        self,
        params: SimulationParams = SimulationParams(),
        seed: int = 0,
        *,
        paced: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._params = params
        self._seed = int(seed)
        self._paced = paced
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._closed = False
        self._stop_requested = False
        self._truth, tables = _build(params, self._seed)
        self._background = tables[0]
        self._tables = tables[1:]
        self._zx, self._zr = _sim_kernels.ziggurat_tables()
        self._half = int(math.ceil(5.0 * params.psf_sigma_px))
        self._max_adu = float(np.iinfo(np.dtype(params.dtype)).max)
        self.render_frame(0)  # compiles the render kernels now, not while the camera's clock runs

    @property
    def truth(self) -> SimulationTruth:
        """The ground truth of the movie."""
        return self._truth

    @property
    def params(self) -> SimulationParams:
        """The simulation parameters."""
        return self._params

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message."""
        p = self._params
        return {
            "source": "simulated",
            "shape": list(p.shape),
            "dtype": p.dtype,
            "n_frames": p.n_frames,
            "frame_rate_hz": p.frame_rate_hz,
            "camera": dict(self._truth.camera),
            "simulation": p.as_dict(),
            "seed": self._seed,
        }

    def _check_frame(self, t: int) -> int:
        if int(t) != t or not 0 <= t < self._params.n_frames:
            raise IndexError(f"frame {t!r} is outside the movie (0..{self._params.n_frames - 1})")
        return int(t)

    def _signal(self, t: int) -> np.ndarray:
        """Expected photons the spots add to frame ``t`` (negative where dark particles absorb), (H, W)."""
        signal = np.zeros(self._params.shape)
        _sim_kernels.render_signal(
            self._truth.positions_in_frame(t),
            self._truth.photons[t].astype(np.float64),
            self._params.psf_sigma_px,
            self._half,
            signal,
        )
        if self._params.contrast == "dark":
            np.negative(signal, out=signal)
        return signal

    def expected_photons(self, t: int) -> np.ndarray:
        """Noise-free expected photons per pixel of frame ``t`` (background + spots), float64 (H, W)."""
        t = self._check_frame(t)
        return np.maximum(self._signal(t) + self._background, 0.0)

    def render_frame(self, t: int) -> np.ndarray:
        """Frame ``t`` in ADU (the params' dtype, (H, W)); the same array every time it is asked for."""
        t = self._check_frame(t)
        p = self._params
        signal = self._signal(t)
        state = np.random.SeedSequence([self._seed, t]).generate_state(4, np.uint64)
        if not state.any():  # xoshiro's one forbidden state; astronomically unlikely
            state[0] = 1
        out = np.empty(p.shape, np.dtype(p.dtype))
        _sim_kernels.expose(
            signal,
            self._background,
            *self._tables,
            self._zx,
            self._zr,
            p.offset_adu,
            p.gain_adu_per_e,
            p.read_noise_e * p.gain_adu_per_e,
            self._max_adu,
            state,
            out,
        )
        return out

    def __iter__(self) -> Iterator[Frame]:
        """Yield every frame in order (a fresh pass each time it is called)."""
        if self._closed:
            raise ValueError("this SimulatedCamera is closed; create a new one")
        rate = self._params.frame_rate_hz
        t0 = self._wall_clock()
        start = self._clock()
        for t in range(self._params.n_frames):
            data = self.render_frame(t)
            if self._paced:
                wait = start + t / rate - self._clock()
                if wait > 0:
                    self._sleep(wait)
            if self._closed or self._stop_requested:
                logger.info("simulated camera stopped after %d frames", t)
                return
            yield Frame(seq=t, timestamp=t0 + t / rate, data=data, metadata={})

    def stop(self) -> None:
        """End an iteration in progress before its next frame; safe from another thread."""
        self._stop_requested = True

    def close(self) -> None:
        """Stop the camera (iteration ends before the next frame); safe to call twice."""
        self._closed = True

    def __enter__(self) -> SimulatedCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_movie(
    path: str | os.PathLike[str],
    params: SimulationParams = SimulationParams(),
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a simulated movie as a multi-page TIFF and its truth as ``<stem>.truth.h5`` beside it.

    Frames are rendered and written one at a time (the movie is never held in
    memory) as plain uncompressed pages of one contiguous series, so readers
    can memory-map the file. The first page's description holds tifffile's
    shaped JSON metadata with ``frame_rate_hz`` and ``camera``
    (``offset_adu``, ``gain_adu_per_e``, ``read_noise_e``), which
    :class:`~plstream.acquire_adapters.files.tiff_stack.TiffStackSource` reports.
    Both files are written under temporary names and renamed when complete.

    Parameters
    ----------
    path : path-like
        The TIFF to write (``.tif``).
    params : SimulationParams
    seed : int
    progress : callable, optional
        Called as ``progress(frames_done, n_frames)`` after each frame.

    Returns
    -------
    pathlib.Path
        The truth file.
    """
    path = Path(path)
    camera = SimulatedCamera(params, seed)
    truth_path = path.with_name(path.stem + ".truth.h5")
    frame_bytes = params.shape[0] * params.shape[1] * np.dtype(params.dtype).itemsize
    bigtiff = frame_bytes * params.n_frames > 2**32 - 2**25
    metadata = {
        "frame_rate_hz": params.frame_rate_hz,
        "camera": dict(camera.truth.camera),
        "source": "plstream simulated camera",
        "seed": int(seed),
        "truth_file": truth_path.name,
    }
    partial = path.with_name(path.name + ".partial")
    try:
        with tifffile.TiffWriter(partial, bigtiff=bigtiff) as tif:
            for t in range(params.n_frames):
                tif.write(camera.render_frame(t), contiguous=True, photometric="minisblack", metadata=metadata)
                if progress is not None:
                    progress(t + 1, params.n_frames)
        save_truth(camera.truth, truth_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    logger.info("wrote %s (%d frames) and %s", path, params.n_frames, truth_path)
    return truth_path
