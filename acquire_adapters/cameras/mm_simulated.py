"""A Micro-Manager camera, written in Python, that films plstream's simulated movie.

:class:`SimulatedMMCamera` is a pymmcore-plus ``CameraDevice`` for
``UniMMCore`` (pymmcore-plus's core that runs Python devices beside the C++
ones). In a sequence acquisition, image t = 0, 1, 2, ... is exactly
:meth:`SimulatedCamera.render_frame(t) <plstream.acquire_adapters.simulated.camera.SimulatedCamera.render_frame>`
of the same parameters and seed (cropped to the ROI), released at the end of
its exposure on an absolute schedule ``start + (t + 1) * exposure`` (frame
rate = 1 / exposure, no readout time), so MMCore's own acquisition path
(circular buffer, image metadata, overflow) runs end to end without hardware
and an analysis can be scored against the simulation's ground truth. The
movie has ``params.n_frames`` frames: after the last one the camera stops
delivering, as a camera that failed would.

Properties: ``Exposure`` (ms, 0.01-10000; default ``1000 / frame_rate_hz``;
read when a sequence starts), ``Binning`` (1 only: the simulation renders
unbinned pixels), ``ActualInterval-ms`` (= exposure, read-only), the
photon model as read-only properties named by
:data:`~plstream.acquire_adapters.cameras.micromanager.PHOTON_MODEL_PROPERTIES`
(offset ADU, gain ADU per electron, read noise electrons), which
:class:`~plstream.acquire_adapters.cameras.micromanager.MicroManagerCamera`
reports, and the pre-initialization properties ``Seed`` and ``Frames``
(n_frames), so a configuration file can choose the movie. The pixel type is
the simulation's (uint16 by default).

Use it from Python with :func:`simulated_core`, or from a Micro-Manager
configuration file loaded by ``UniMMCore`` (``#py`` lines are comments to
the C++ core and to Micro-Manager's GUI)::

    #py pyDevice,SimCam,plstream.acquire_adapters.cameras.mm_simulated,SimulatedMMCamera
    #py Property,SimCam,Seed,1
    #py Property,SimCam,Frames,5000
    Property,Core,Initialize,1
    #py Property,Core,Camera,SimCam

Loaded from a file the device has the default
:class:`~plstream.acquire_adapters.simulated.camera.SimulationParams`
(256 x 256 px, 60 emitters) apart from ``Seed`` and ``Frames``.

This module imports pymmcore-plus; install it with
``pip install 'plstream[micromanager]'``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pymmcore_plus
from pymmcore_plus import Keyword

from plstream.acquire_adapters.cameras.micromanager import PHOTON_MODEL_PROPERTIES
from plstream.acquire_adapters.simulated.camera import SimulatedCamera, SimulationParams

__all__ = ["SimulatedMMCamera", "simulated_core"]

_NEEDS = (0, 17, 3)  # Python cameras with ROI (getROI/setROI) in UniMMCore
if tuple(int(part) for part in re.findall(r"\d+", pymmcore_plus.__version__)[:3]) < _NEEDS:
    raise ImportError(
        f"the simulated Micro-Manager camera needs pymmcore-plus {'.'.join(map(str, _NEEDS))} or newer, "
        f"found {pymmcore_plus.__version__}: pip install -U pymmcore-plus"
    )

from pymmcore_plus.experimental.unicore import CameraDevice, UniMMCore  # noqa: E402  (after the version check)

_EXPOSURE_LIMITS_MS = (0.01, 10_000.0)
_MAX_FRAMES = 10_000_000
_DEFAULT_PARAMS = SimulationParams()


class SimulatedMMCamera(CameraDevice):
    """A Micro-Manager camera whose sequence image t is the simulated movie's frame t.

    Parameters
    ----------
    params : SimulationParams
        The movie (its ``n_frames`` and the seed can be changed by the
        ``Frames`` and ``Seed`` properties before the device is initialized).
    seed : int
        Non-negative seed, as for :class:`SimulatedCamera`.
    """

    def __init__(self, params: SimulationParams = _DEFAULT_PARAMS, seed: int = 0) -> None:
        super().__init__()
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._params = params
        self._simulation: SimulatedCamera | None = None
        self._exposure_ms = 1000.0 / params.frame_rate_hz
        self._roi: tuple[int, int, int, int] | None = None
        self.images_sent = 0
        """Images this device has handed to the core since it was loaded (all sequences)."""
        self.register_property("Seed", default_value=int(seed), limits=(0, 2**63 - 1), is_pre_init=True)
        self.register_property("Frames", default_value=params.n_frames, limits=(1, _MAX_FRAMES), is_pre_init=True)
        self.set_property_limits(Keyword.Exposure, _EXPOSURE_LIMITS_MS)
        for key, name in PHOTON_MODEL_PROPERTIES.items():
            self.register_property(name, getter=_photon_model_getter(key), property_type=float, is_read_only=True)

    # ------------------------------------------------------------ the movie
    def _movie(self) -> SimulatedCamera:
        """The simulated camera for the current ``Seed`` and ``Frames`` (rebuilt when they change)."""
        seed = int(float(self.get_property_value("Seed")))
        n_frames = int(float(self.get_property_value("Frames")))
        sim = self._simulation
        if sim is None or sim.truth.seed != seed or sim.params.n_frames != n_frames:
            params = dataclasses.replace(self._params, n_frames=n_frames)
            sim = self._simulation = SimulatedCamera(params, seed)
        return sim

    @property
    def simulation(self) -> SimulatedCamera:
        """The :class:`SimulatedCamera` whose frames this device delivers (its ``truth`` is the ground truth)."""
        return self._movie()

    def initialize(self) -> None:
        """Build the movie (emitters, blinking, drift) for the chosen ``Seed`` and ``Frames``."""
        self._movie()

    def description(self) -> str:
        return "plstream simulated movie of blinking emitters (ground truth available)"

    # ----------------------------------------------------- camera interface
    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        value = float(exposure)
        low, high = _EXPOSURE_LIMITS_MS
        if not low <= value <= high:
            raise ValueError(f"Exposure must be within {low}-{high} ms, got {exposure!r}")
        self._exposure_ms = value

    def get_actual_interval_ms(self) -> float:
        return self._exposure_ms

    def get_binning(self) -> int:
        return 1

    def set_binning(self, value: int) -> None:
        if float(value) != 1:
            raise ValueError(f"Binning {value!r} is not available: the simulated camera renders unbinned pixels (1)")

    def get_camera_name(self) -> str:
        return "plstream simulated camera"

    def sensor_shape(self) -> tuple[int, int]:
        """Full frame (rows, columns) px."""
        return self._params.shape

    def shape(self) -> tuple[int, int]:
        if self._roi is not None:
            return (self._roi[3], self._roi[2])
        return self.sensor_shape()

    def dtype(self) -> str:
        return self._params.dtype

    def get_roi(self) -> tuple[int, int, int, int]:
        if self._roi is not None:
            return self._roi
        rows, cols = self.sensor_shape()
        return (0, 0, cols, rows)

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        rows, cols = self.sensor_shape()
        if x < 0 or y < 0 or width <= 0 or height <= 0 or x + width > cols or y + height > rows:
            raise ValueError(f"ROI (x={x}, y={y}, width={width}, height={height}) must lie within {cols}x{rows} px")
        self._roi = (int(x), int(y), int(width), int(height))

    def clear_roi(self) -> None:
        self._roi = None

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping[str, Any]]:
        """Images 0, 1, ... of the movie (``n`` of them, or all), each released at the end of its exposure."""
        movie = self._movie()
        total = movie.params.n_frames if n is None else min(int(n), movie.params.n_frames)
        period_s = self._exposure_ms / 1000.0
        exposure = f"{self._exposure_ms:.4f}"
        x, y, width, height = self.get_roi()
        start = time.perf_counter()
        for t in range(total):
            frame = movie.render_frame(t)[y : y + height, x : x + width]
            wait = start + (t + 1) * period_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            get_buffer(frame.shape, frame.dtype)[:] = frame
            self.images_sent += 1
            yield {Keyword.Metadata_Exposure: exposure}


def _photon_model_getter(key: str) -> Callable[[SimulatedMMCamera], float]:
    return lambda device: float(getattr(device.simulation.params, key))


def simulated_core(params: SimulationParams = _DEFAULT_PARAMS, seed: int = 0, *, label: str = "SimCam") -> UniMMCore:
    """A ``UniMMCore`` whose camera (``label``) is a :class:`SimulatedMMCamera` of ``params`` and ``seed``.

    Examples
    --------
    >>> core = simulated_core(SimulationParams(shape=(64, 64), n_frames=20, n_emitters=3), seed=1)
    >>> core.getCameraDevice(), core.getImageWidth(), core.getImageHeight()
    ('SimCam', 64, 64)
    """
    core = UniMMCore()
    core.loadPyDevice(label, SimulatedMMCamera(params, seed))
    core.initializeDevice(label)
    core.setCameraDevice(label)
    return core
