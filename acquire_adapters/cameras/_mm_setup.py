"""Opening a Micro-Manager camera: the core, its configuration, the camera, its settings and what it reports.

Each step raises :class:`~plstream.acquire_adapters.base.CameraError` with
one line that says what to do. pymmcore-plus is imported on first use
(:func:`open_core`), so this module imports without it. Used by
:class:`~plstream.acquire_adapters.cameras.micromanager.MicroManagerCamera`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plstream.acquire_adapters.base import CameraError, InputError
from plstream.acquire_adapters.cameras._mm_images import number

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

__all__ = [
    "PHOTON_MODEL_PROPERTIES",
    "CameraState",
    "choose_camera",
    "configure",
    "first_line",
    "open_core",
    "read_state",
]

logger = logging.getLogger(__name__)

PHOTON_MODEL_PROPERTIES = {
    "offset_adu": "Offset-ADU",
    "gain_adu_per_e": "Gain-ADUPerElectron",
    "read_noise_e": "ReadNoise-Electrons",
}
"""Camera device properties read as the photon model (key in ``describe()["camera"]`` -> property name).

Micro-Manager has no standard properties for the offset in ADU, the
conversion gain in ADU per electron and the read noise in electrons (its
``Gain`` and ``Offset`` are camera settings in the camera's own units), so
only a device that names them exactly so is trusted;
:class:`~plstream.acquire_adapters.cameras.mm_simulated.SimulatedMMCamera` does.
"""

_INSTALL_HINT = "install the optional Micro-Manager support: pip install 'plstream[micromanager]'"
_DTYPES = {1: "uint8", 2: "uint16", 4: "uint32"}
_CAMERA_TYPE = 2  # MM::CameraDevice (pymmcore_plus.DeviceType.Camera)
_INITIALIZED = 1  # pymmcore_plus.DeviceInitializationState.InitializedSuccessfully
_BINNING = "Binning"
_REFUSALS = (RuntimeError, ValueError, TypeError, NotImplementedError)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (MMCore's can run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _camera_name(label: str) -> str:
    return f"micromanager camera {label!r}"


def open_core(config: str, adapter_path: str, core: CMMCorePlus | None) -> tuple[CMMCorePlus, bool]:
    """The core to drive, with ``config`` loaded into it when given; and whether devices were loaded here.

    Without ``core`` one is created: ``UniMMCore`` when the file declares
    Python devices (``#py`` lines), else ``CMMCorePlus``, searching
    ``adapter_path`` ("" = what pymmcore-plus finds) for device adapters.
    """
    try:
        import pymmcore_plus
    except ImportError as exc:
        raise InputError("micromanager", f"pymmcore-plus is not installed; {_INSTALL_HINT}") from exc
    if not config:
        if core is None:
            raise CameraError(
                "micromanager",
                "no configuration: set camera.micromanager.config to your microscope's MMConfig.cfg "
                "(written by Micro-Manager's Hardware Configuration Wizard)",
            )
        return core, False
    path = Path(config).expanduser()
    if not path.is_file():
        raise CameraError(
            str(path), "no such configuration file; set camera.micromanager.config to your microscope's MMConfig.cfg"
        )
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError as exc:
        raise CameraError(str(path), f"cannot read the configuration file: {first_line(exc)}") from exc
    python_devices = any(line.startswith("#py ") for line in lines)
    cpp_devices = any(line.startswith("Device,") for line in lines)
    if core is None:
        if adapter_path and not Path(adapter_path).expanduser().is_dir():
            raise CameraError(
                adapter_path,
                "no such folder; set camera.micromanager.adapter_path to the folder of Micro-Manager's "
                'device adapters, or "" to use the one pymmcore-plus finds',
            )
        paths = [str(Path(adapter_path).expanduser())] if adapter_path else []
        if python_devices:
            from pymmcore_plus.experimental.unicore import UniMMCore

            core = UniMMCore(adapter_paths=paths)
        else:
            core = pymmcore_plus.CMMCorePlus(adapter_paths=paths)
    if cpp_devices and not core.getDeviceAdapterNames():
        searched = ", ".join(core.getDeviceAdapterSearchPaths()) or "nowhere: pymmcore-plus found no Micro-Manager"
        raise CameraError(
            str(path),
            f"no Micro-Manager device adapters found (searched {searched}); install them with `mmcore install` "
            "or set camera.micromanager.adapter_path to your Micro-Manager folder",
        )
    if python_devices and not hasattr(core, "loadPyDevice"):
        raise CameraError(
            str(path),
            "declares Python devices (#py lines), which need pymmcore-plus's UniMMCore; "
            "pass core=UniMMCore() or leave core unset",
        )
    try:
        core.loadSystemConfiguration(str(path))
    except (RuntimeError, ValueError, OSError, ImportError, AttributeError, TypeError) as exc:
        raise CameraError(str(path), f"Micro-Manager could not load this configuration: {first_line(exc)}") from exc
    return core, True


def choose_camera(core: CMMCorePlus, camera: str) -> str:
    """The label of the camera to drive (``camera``, or the core's current one), made the core's current camera."""
    cameras = [str(label) for label in core.getLoadedDevicesOfType(_CAMERA_TYPE)]
    loaded = ", ".join(cameras)
    if not cameras:
        raise CameraError(
            "micromanager", "no camera is loaded; add one to the configuration (Hardware Configuration Wizard)"
        )
    if camera:
        if camera not in cameras:
            raise CameraError(
                "micromanager", f"no camera labelled {camera!r}; set camera.micromanager.camera to one of: {loaded}"
            )
        label = camera
    else:
        label = str(core.getCameraDevice())
        if not label:
            if len(cameras) > 1:
                raise CameraError(
                    "micromanager", f"no current camera; set camera.micromanager.camera to one of: {loaded}"
                )
            label = cameras[0]
    if int(core.getDeviceInitializationState(label)) != _INITIALIZED:
        raise CameraError(
            _camera_name(label),
            "the camera is not initialized (it failed to start, or the configuration does not initialize it); "
            "check that it is connected and see Micro-Manager's log",
        )
    if core.isSequenceRunning():
        raise CameraError(
            _camera_name(label), "a sequence acquisition (live mode) is already running on this core; stop it first"
        )
    if core.getCameraDevice() != label:
        core.setCameraDevice(label)
    return label


def _refused(label: str, setting: str, value: Any, exc: BaseException, allowed: str = "") -> CameraError:
    hint = f" (allowed: {allowed})" if allowed else ""
    return CameraError(
        _camera_name(label),
        f"the camera refused {setting} = {value!r}{hint}: {first_line(exc)}; change camera.micromanager.{setting}",
    )


def configure(
    core: CMMCorePlus,
    label: str,
    exposure_ms: float | None,
    binning: int | None,
    roi_px: tuple[int, int, int, int] | None,
    buffer_mb: int,
) -> None:
    """Apply the settings (None: leave as configured), binning before ROI, which cameras reset or rescale with it."""
    if binning is not None:
        if not core.hasProperty(label, _BINNING):
            if binning != 1:
                raise CameraError(
                    _camera_name(label), 'this camera has no Binning property; set binning to 1 or "auto"'
                )
        elif number(core.getProperty(label, _BINNING)) != binning:
            try:
                core.setProperty(label, _BINNING, int(binning))
            except _REFUSALS as exc:
                allowed = ", ".join(str(v) for v in core.getAllowedPropertyValues(label, _BINNING))
                raise _refused(label, "binning", binning, exc, allowed) from exc
    if roi_px is not None:
        try:
            core.setROI(label, *roi_px)
        except _REFUSALS as exc:
            raise _refused(label, "roi_px", list(roi_px), exc) from exc
        actual = tuple(int(v) for v in core.getROI(label))
        if actual != roi_px:
            logger.warning("%s: asked for ROI %s, the camera set %s", _camera_name(label), list(roi_px), list(actual))
    if exposure_ms is not None:
        try:
            core.setExposure(label, float(exposure_ms))
        except _REFUSALS as exc:
            raise _refused(label, "exposure_ms", exposure_ms, exc) from exc
    try:
        core.setCircularBufferMemoryFootprint(buffer_mb)
    except _REFUSALS as exc:
        raise _refused(label, "buffer_mb", buffer_mb, exc) from exc


@dataclass(frozen=True)
class CameraState:
    """What the configured camera delivers, read once it is set up.

    Attributes
    ----------
    description : dict
        The source description (see :mod:`~plstream.acquire_adapters.cameras.micromanager`).
    shape : tuple of int
        Image (rows, columns) px.
    dtype : numpy.dtype
    exposure_ms : float
    binning : int
    roi_px : tuple of int
        (x, y, width, height) px.
    capacity : int
        Images the circular buffer holds.
    """

    description: dict[str, Any]
    shape: tuple[int, int]
    dtype: np.dtype
    exposure_ms: float
    binning: int
    roi_px: tuple[int, int, int, int]
    capacity: int


def read_state(core: CMMCorePlus, label: str) -> CameraState:
    """The camera's format, settings and description; a colour or unknown pixel format is refused."""

    def prop(name: str) -> Any:
        return core.getProperty(label, name) if core.hasProperty(label, name) else None

    components = int(core.getNumberOfComponents())
    if components != 1:
        raise CameraError(
            _camera_name(label),
            f"a colour camera ({components} components per pixel); plstream needs monochrome images: "
            "set the camera's PixelType to a grey format",
        )
    bytes_per_pixel = int(core.getBytesPerPixel())
    if bytes_per_pixel not in _DTYPES:
        raise CameraError(_camera_name(label), f"{bytes_per_pixel} bytes per pixel is not a grey format plstream reads")
    dtype = np.dtype(_DTYPES[bytes_per_pixel])
    shape = (int(core.getImageHeight()), int(core.getImageWidth()))
    exposure_ms = float(core.getExposure(label))
    binning = int(number(prop(_BINNING)) or 1)
    x, y, width, height = (int(v) for v in core.getROI(label))
    capacity = int(core.getBufferTotalCapacity())
    description: dict[str, Any] = {
        "source": "micromanager",
        "shape": list(shape),
        "dtype": dtype.name,
        "n_frames": None,
        "live": True,
    }
    pixel_size = number(core.getPixelSizeUm())
    if pixel_size is not None and pixel_size > 0:
        description["pixel_size_um"] = pixel_size
    interval_ms, interval_from = number(prop("ActualInterval-ms")), "ActualInterval-ms"
    if interval_ms is None or interval_ms <= 0:
        interval_ms, interval_from = exposure_ms, "exposure"
    if interval_ms > 0:
        description["frame_interval_s"] = interval_ms / 1000.0
        description["frame_rate_hz"] = 1000.0 / interval_ms
        description["frame_interval_from"] = interval_from
    photon_model = {}
    for key, name in PHOTON_MODEL_PROPERTIES.items():
        value = number(prop(name))
        if value is not None and value >= 0 and (key != "gain_adu_per_e" or value > 0):
            photon_model[key] = value
    if photon_model:
        description["camera"] = photon_model
    description["device"] = {
        "label": label,
        "library": str(core.getDeviceLibrary(label)),
        "name": str(core.getDeviceName(label)),
        "description": str(core.getDeviceDescription(label)),
        "pixel_type": str(prop("PixelType") or f"GRAY{8 * bytes_per_pixel}"),
        "bit_depth": int(core.getImageBitDepth()),
        "binning": binning,
        "exposure_ms": exposure_ms,
        "roi_px": [x, y, width, height],
    }
    description["buffer_frames"] = capacity
    return CameraState(description, shape, dtype, exposure_ms, binning, (x, y, width, height), capacity)
