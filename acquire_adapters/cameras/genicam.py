"""GenICam cameras (GigE Vision, USB3 Vision, CoaXPress, ...) through a GenTL producer and harvesters.

:class:`GenicamCamera` opens one camera with the GenTL producer (``.cti``
file) of its vendor's driver, applies every setting at once, and yields its
frames as a live :class:`~plstream.acquire_adapters.base.FrameSource`.
Needs the optional extra: ``pip install 'plstream[genicam]'`` (harvesters
and genicam); importing this module works without it, opening a camera does not.

Opening (the constructor) does, in order: check the producer file (a shared
library exporting the GenTL functions; ``cti=""`` takes every ``.cti`` in
the folders of ``GENICAM_GENTL64_PATH``), list the cameras and pick one,
open it, then set the ``nodes`` given by name, the pixel format, the region
of interest (offsets to 0, then Width and Height, then OffsetX and OffsetY),
the exposure (ExposureAuto to Off first) and the frame rate
(AcquisitionFrameRateEnable on first). Every value is checked against what
the camera allows now, and a refusal is one
:class:`~plstream.acquire_adapters.base.InputError` line naming the node, the
value and what is allowed. :meth:`GenicamCamera.describe` then reports the
final shape, dtype, pixel format and frame rate read back from the camera.
Acquisition starts when iteration starts and stops when it ends.

Pixel formats: ``"auto"`` takes the deepest monochrome format the camera
offers (Mono16 > Mono14 > Mono12 > Mono10 > Mono8, unpacked before packed:
harvesters unpacks Mono12p to uint16 either way, the unpacked one costs the
host no bit-shuffling); with no monochrome format, the deepest RGB/BGR
format. A colour frame becomes grey as the **sum** R + G + B (alpha
dropped), in a wider integer type that cannot overflow (uint16 for 8-bit
channels, uint32 for 10- to 16-bit): each channel counts the photo-electrons
behind its filter, so the sum is the whole detected signal with the same
"offset + gain x counts" noise model the analysis fits, kept in integers.
A mean would divide the counts by three (rounding them, or turning them into
floats), and luma weights (0.299 R + 0.587 G + 0.114 B) are for eyes, not
photons. An explicitly named format may be any single-component format
harvesters decodes (Mono, Bayer raw, ...), or an RGB/BGR one.

Frames: ``seq`` is the GenTL frame ID minus the first frame ID delivered
after acquisition starts, so frames lost inside the camera or its driver
(all ``buffers`` full) show as gaps downstream. A 16-bit GigE Vision 1
block ID that wraps (65535 -> 1) is unwrapped. ``timestamp`` is the host time
(Unix epoch, s) at which the frame was fetched. ``metadata`` holds
``camera_frame_id`` and, when the producer gives buffer timestamps,
``camera_timestamp_ns`` (device clock). A fetch that times out is not an
error (a triggered or slow camera); a camera that fails mid-run (unplugged,
its device closed, its producer reset) ends the iteration with a
:class:`~plstream.acquire_adapters.base.CameraError` that says after how many
frames.

Threads: :meth:`GenicamCamera.stop` may be called from any thread; an
iteration waiting for a frame ends within ``fetch_timeout_s`` (and later
iterations yield nothing). GenTL lets a process load a producer once, so a
second camera object on the same ``.cti`` raises InputError until the first
one is closed. harvesters installs its own Ctrl-C handler when a camera is
opened in the main thread; the previous handler is put back, so Ctrl-C keeps
meaning what the application decided. harvesters' log messages go to the
logger ``plstream.acquire_adapters.cameras.genicam.harvesters`` instead of
its own stderr handler.

Examples
--------
With the software camera that ships with the ``genicam`` package (whose
buffers take 10 MB each, whatever the image size)::

    import os, genicam
    cti = os.path.join(os.path.dirname(genicam.__file__), "viky.cti")
    settings = dict(device="1", frame_rate_hz=100, roi_px=(0, 0, 320, 240), buffers=8)
    with GenicamCamera(cti=cti, **settings) as camera:
        print(camera.describe()["shape"])          # [240, 320]
        for frame in camera:
            if frame.seq >= 99:
                break
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from plstream.acquire_adapters.base import CameraError, Frame, InputError
from plstream.acquire_adapters.cameras._genicam_discovery import (
    choose_device,
    device_fields,
    producer_files,
    producers_in_use,
)
from plstream.acquire_adapters.cameras._genicam_frames import FrameIds, PixelFormat, choose_pixel_format, to_image
from plstream.acquire_adapters.cameras._genicam_nodes import NodeAccess, genicam_errors, short_reason

__all__ = ["GenicamCamera"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install the optional GenICam support: pip install 'plstream[genicam]'"


def _import_harvesters() -> Any:
    """harvesters' Harvester class, or an InputError naming the extra to install."""
    try:
        from harvesters.core import Harvester  # imports genicam, the GenApi/GenTL bindings
    except ImportError as exc:
        raise InputError("genicam", f"GenICam cameras need harvesters and genicam ({exc}); {_INSTALL_HINT}") from exc
    return Harvester


def _positive(name: str, value: float | None) -> float | None:
    """``value`` as a positive finite float (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError("genicam", f"{name} must be a positive number, got {value!r}")
    return float(value)


class GenicamCamera:
    """A GenICam camera as a live :class:`~plstream.acquire_adapters.base.FrameSource` (see the module docstring).

    Parameters
    ----------
    cti : str
        The GenTL producer (.cti file) of the camera's driver; "" = every
        ``.cti`` in the folders listed in ``GENICAM_GENTL64_PATH``.
    device : str
        Which camera: its serial number, user-defined name or device ID, else
        its index in the producer's list (a string of digits); "" = the first.
    pixel_format : str
        A PixelFormat entry (e.g. ``"Mono12"``), or ``"auto"``.
    exposure_us : float, optional
        Exposure time, µs (node ExposureTime); None leaves the camera's.
    frame_rate_hz : float, optional
        Frame rate, frames/s (node AcquisitionFrameRate); None leaves the camera's.
    roi_px : tuple of int, optional
        Region of interest ``(x, y, width, height)`` in px (OffsetX, OffsetY,
        Width, Height); None leaves the camera's.
    buffers : int
        Frame buffers the driver fills before plstream takes them; frames the
        camera sends while all are full are lost (and show as gaps in ``seq``).
    nodes : mapping of str to bool, int, float or str, optional
        Other GenICam nodes set by name, in order, before the settings above
        (a command node runs when given True).
    fetch_timeout_s : float
        How long one wait for a frame lasts before :meth:`stop` is checked
        again, s: the latency of :meth:`stop`. A timeout is not an error.

    Raises
    ------
    InputError
        The extra is not installed, the producer file is missing or is not a
        GenTL producer, no camera or not the named one is found, it cannot be
        opened, or a setting is refused (the message names node, value and
        what is allowed).
    """

    def __init__(
        self,
        *,
        cti: str = "",
        device: str = "",
        pixel_format: str = "auto",
        exposure_us: float | None = None,
        frame_rate_hz: float | None = None,
        roi_px: tuple[int, int, int, int] | None = None,
        buffers: int = 64,
        nodes: Mapping[str, Any] | None = None,
        fetch_timeout_s: float = 0.5,
    ) -> None:
        self._harvester: Any = None
        self._ia: Any = None
        self._lock = threading.Lock()  # held around each fetch and by close(): no destroy under a fetch
        self._stop = threading.Event()
        self._closed = False
        self._iterating = False
        self._has_frame_ids = True
        self._has_timestamps = True
        self._label = "genicam"
        exposure = _positive("exposure_us", exposure_us)
        rate = _positive("frame_rate_hz", frame_rate_hz)
        timeout = _positive("fetch_timeout_s", fetch_timeout_s)
        assert timeout is not None
        self._fetch_timeout_s = timeout
        if isinstance(buffers, bool) or not isinstance(buffers, int) or buffers < 1:
            raise InputError("genicam", f"buffers must be a positive integer, got {buffers!r}")
        if roi_px is not None and (
            len(roi_px) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in roi_px)
            or min(roi_px[2:]) < 1
        ):
            raise InputError("genicam", f"roi_px must be (x, y, width, height) in px, width and height >= 1: {roi_px}")
        harvester_class = _import_harvesters()
        try:
            self._open(harvester_class, str(cti), str(device), pixel_format, exposure, rate, roi_px, buffers, nodes)
        except BaseException:
            self.close()
            raise

    def _open(
        self,
        harvester_class: Any,
        cti: str,
        device: str,
        pixel_format: str,
        exposure_us: float | None,
        frame_rate_hz: float | None,
        roi_px: tuple[int, int, int, int] | None,
        buffers: int,
        nodes: Mapping[str, Any] | None,
    ) -> None:
        from harvesters.core import ParameterKey, ParameterSet

        producers = producer_files(cti)
        self._harvester = harvester_class(
            config=ParameterSet({ParameterKey.LOGGER: logging.getLogger(f"{__name__}.harvesters")})
        )
        for path in producers:
            self._harvester.add_file(path)
        self._harvester.update()
        infos = list(self._harvester.device_info_list)
        if not infos:
            busy = producers_in_use(producers)
            if busy:
                raise InputError(
                    os.pathsep.join(busy),
                    "this GenTL producer is already in use in this process (by another camera object that is still "
                    "open; a process can load a producer once): close that camera first",
                )
            raise InputError(
                cti or os.pathsep.join(producers),
                "the GenTL producer finds no camera: check that it is connected and powered, that the vendor's "
                "viewer sees it, and that no other program has it open",
            )
        found = [device_fields(info) for info in infos]
        chosen = choose_device(found, device)
        self._device: dict[str, Any] = {**found[chosen], "producer": os.pathsep.join(producers)}
        self._label = f"genicam camera {found[chosen].get('model', '?')} (serial {found[chosen].get('serial', '?')})"
        self._ia = self._create_acquirer(infos[chosen])
        ia = self._ia
        # harvesters waits for the producer in steps of this many ms while fetching (default 1: ~5% of a
        # core while waiting); its own fetch timeout (used by its background thread only) must stay longer
        ia.timeout_period_on_client_fetch_call = self._fetch_timeout_s
        ia.timeout_period_on_update_event_data_call = max(1, min(20, int(self._fetch_timeout_s * 500)))
        try:
            ia.num_buffers = buffers
        except ValueError as exc:
            raise InputError(self._label, f"buffers={buffers}: {exc}") from exc
        access = NodeAccess(ia.remote_device.node_map, self._label)
        applied = {name: access.set(name, value, origin="nodes") for name, value in dict(nodes or {}).items()}
        self._format = self._apply_pixel_format(access, pixel_format)
        if roi_px is not None:
            self._apply_roi(access, roi_px)
        if exposure_us is not None:
            names = ("ExposureTime", "ExposureTimeAbs")
            self._apply_float(access, names, exposure_us, "exposure_us", switch=("ExposureAuto", "Off"))
        if frame_rate_hz is not None:
            names = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")
            enable = ("AcquisitionFrameRateEnable", True)
            self._apply_float(access, names, frame_rate_hz, "frame_rate_hz", switch=enable)
        self._shape = (int(access.read("Height") or 0), int(access.read("Width") or 0))
        if min(self._shape) < 1:
            raise InputError(self._label, f"the camera reports an image of {self._shape[0]}x{self._shape[1]} px")
        self._device["pixel_format"] = self._format.name
        if self._format.colour:
            self._device["converted_to_grey"] = "sum of R, G and B"
        rate = _frame_rate(access)
        self._description: dict[str, Any] = {
            "source": "genicam",
            "shape": list(self._shape),
            "dtype": self._format.out_dtype.name,
            "n_frames": None,
            "live": True,
            "frame_rate_hz": rate,
            "frame_interval_s": 1.0 / rate if rate else None,
            "device": self._device,
        }
        exposure = access.read("ExposureTime") if access.has("ExposureTime") else access.read("ExposureTimeAbs")
        if isinstance(exposure, (int, float)) and not isinstance(exposure, bool):
            self._description["exposure_us"] = float(exposure)
        if applied:
            self._description["nodes"] = {name: value for name, value in applied.items() if value is not None}
        logger.info(
            "%s: %dx%d px %s, %s frames/s, %d buffers",
            self._label,
            self._shape[1],
            self._shape[0],
            self._format.name,
            rate,
            buffers,
        )

    def _create_acquirer(self, info: Any) -> Any:
        """Open the camera, putting back the Ctrl-C handler harvesters replaces (in the main thread)."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main else None
        # ValueError: harvesters no longer finds the device
        refused: tuple[type[BaseException], ...] = (*genicam_errors(), ValueError)
        try:
            return self._harvester.create(info)
        except refused as exc:
            raise InputError(
                self._label,
                f"cannot open it ({short_reason(exc)}); close any other program using it (e.g. the vendor's viewer)",
            ) from exc
        finally:
            if previous is not None and signal.getsignal(signal.SIGINT) is not previous:
                signal.signal(signal.SIGINT, previous)

    def _apply_pixel_format(self, access: NodeAccess, requested: str) -> PixelFormat:
        if not access.has("PixelFormat"):
            raise InputError(self._label, "the camera has no PixelFormat node; plstream cannot tell how to read it")
        fmt = choose_pixel_format(access.entries("PixelFormat"), requested, self._label)
        if access.read("PixelFormat") != fmt.name:
            access.set("PixelFormat", fmt.name, origin="pixel_format")
        return fmt

    def _apply_roi(self, access: NodeAccess, roi_px: tuple[int, int, int, int]) -> None:
        """Offsets to their minimum, then Width and Height (now with the whole sensor free), then the offsets."""
        x, y, width, height = roi_px
        offsets = {"OffsetX": x, "OffsetY": y}
        for name in offsets:
            if access.writable(name) and access.read(name) != access.integer_limits(name)[0]:
                access.set(name, access.integer_limits(name)[0], origin="roi_px")
        for name, size in (("Width", width), ("Height", height)):
            if access.read(name) != size:
                access.set(name, size, origin="roi_px")
        for (name, start), axis in zip(offsets.items(), "xy"):
            if access.has(name):
                if access.read(name) != start:
                    access.set(name, start, origin="roi_px")
            elif start:
                raise InputError(
                    self._label,
                    f"roi_px starts at {axis} = {start} but the camera has no {name} node (its image always starts "
                    f"at {axis} = 0); set {axis} to 0",
                )

    def _apply_float(
        self, access: NodeAccess, names: tuple[str, ...], value: float, setting: str, switch: tuple[str, Any]
    ) -> None:
        """Set the first of ``names`` the camera has, after the node that lets it take effect (``switch``)."""
        name = next((n for n in names if access.has(n)), None)
        if name is None:
            raise InputError(self._label, f"{setting}: the camera has no {names[0]} node; leave {setting} unset")
        switch_node, switch_value = switch
        if access.writable(switch_node) and access.read(switch_node) != switch_value:
            access.set(switch_node, switch_value, origin=setting)
        got = access.set(name, value, origin=setting)
        if isinstance(got, (int, float)) and not math.isclose(got, value, rel_tol=1e-6):
            logger.info("%s: %s %s requested, the camera set %s", self._label, name, value, got)

    @property
    def pixel_format(self) -> str:
        """The PixelFormat the camera sends."""
        return self._format.name

    def node_value(self, name: str) -> Any:
        """The current value of a GenICam node (bool, int, float or str), or None when missing or unreadable."""
        if self._ia is None:
            raise ValueError(f"{self._label}: the camera is closed")
        return NodeAccess(self._ia.remote_device.node_map, self._label).read(name)

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message (values read back from the camera)."""
        return copy.deepcopy(self._description)

    def __iter__(self) -> Iterator[Frame]:
        """Start acquisition and yield frames until :meth:`stop` or :meth:`close`; acquisition stops at the end.

        Each iteration is one acquisition run (``seq`` starts at 0 again).

        Raises
        ------
        CameraError
            The camera failed mid-run; the message says after how many frames.
        """
        if self._closed:
            raise ValueError(f"{self._label}: the camera is closed; open it again")
        with self._lock:
            if self._iterating:
                raise RuntimeError(f"{self._label}: already being iterated (one acquisition at a time)")
            self._iterating = True
        try:
            yield from self._acquire()
        finally:
            self._iterating = False

    def _acquire(self) -> Iterator[Frame]:
        ia = self._ia
        with self._lock:
            if self._stop.is_set() or ia is None:
                return
            try:
                ia.start()
            except genicam_errors() as exc:
                raise CameraError(self._label, f"could not start acquisition: {short_reason(exc)}") from exc
        ids = FrameIds(self._label)
        delivered = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._stop.is_set():
                        break
                    frame = self._next_frame(ia, ids, delivered)
                if frame is not None:
                    delivered += 1
                    yield frame
        finally:
            with self._lock:
                if ia.is_valid() and ia.is_acquiring():
                    try:
                        ia.stop()
                    except genicam_errors() as exc:
                        logger.warning("%s: acquisition did not stop cleanly: %s", self._label, short_reason(exc))
            logger.info("%s: acquisition stopped after %d frames", self._label, delivered)

    def _next_frame(self, ia: Any, ids: FrameIds, delivered: int) -> Frame | None:
        """The next frame, or None when none came within ``fetch_timeout_s`` (or harvesters discarded one)."""
        from genicam.gentl import TimeoutException

        def gone(reason: str) -> CameraError:
            return CameraError(self._label, f"the camera stopped delivering frames after {delivered} frames: {reason}")

        destroyed = "its image acquirer was destroyed (the device was closed or its GenTL producer was reset)"
        if not ia.is_valid():
            raise gone(destroyed)
        if not ia.is_acquiring():
            raise gone("acquisition was stopped outside plstream")
        try:
            buffer = ia.fetch(timeout=self._fetch_timeout_s)
        except TimeoutException:
            return None
        except genicam_errors() as exc:
            raise gone(short_reason(exc)) from exc
        except (AttributeError, IndexError, KeyError) as exc:  # harvesters' state torn down under the fetch
            if ia.is_valid():
                raise
            raise gone(destroyed) from exc
        if buffer is None:
            return None
        fetched = time.time()
        try:
            with buffer:
                frame_id = self._frame_id(buffer)
                metadata = self._metadata(buffer, frame_id)
                components = buffer.payload.components if buffer.payload is not None else []
                if not components or components[0] is None:
                    logger.warning("%s: skipped a buffer without an image (camera frame ID %s)", self._label, frame_id)
                    return None
                component = components[0]
                shape = (int(component.height), int(component.width))
                if shape != self._shape:
                    raise gone(f"a frame of {shape[0]}x{shape[1]} px came, the camera was set to {self._shape}")
                try:
                    data = to_image(component.data, shape[0], shape[1], self._format)
                except ValueError as exc:
                    raise gone(str(exc)) from exc
        except genicam_errors() as exc:
            raise gone(short_reason(exc)) from exc
        seq = ids.seq(frame_id) if frame_id is not None else delivered
        return Frame(seq=seq, timestamp=fetched, data=data, metadata=metadata)

    def _frame_id(self, buffer: Any) -> int | None:
        """The buffer's GenTL frame ID; when the producer gives none, None (said once, then not asked again)."""
        if not self._has_frame_ids:
            return None
        try:
            return int(buffer.module.frame_id)
        except genicam_errors() as exc:
            self._has_frame_ids = False
            logger.warning(
                "%s: the producer gives no frame IDs (%s); frames lost in the camera or driver cannot be seen",
                self._label,
                short_reason(exc),
            )
            return None

    def _metadata(self, buffer: Any, frame_id: int | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if frame_id is not None:
            metadata["camera_frame_id"] = frame_id
        if self._has_timestamps:
            try:
                metadata["camera_timestamp_ns"] = int(buffer.module.timestamp_ns)
            except genicam_errors() as exc:
                self._has_timestamps = False
                logger.info("%s: the producer gives no buffer timestamps (%s)", self._label, short_reason(exc))
        return metadata

    def stop(self) -> None:
        """Make an iteration in progress end within ``fetch_timeout_s`` (later ones yield nothing); any thread."""
        self._stop.set()

    def close(self) -> None:
        """Stop acquisition, destroy the image acquirer and reset the harvester; safe to call twice.

        From another thread during an iteration, it waits for the fetch in progress to return first.
        """
        self._stop.set()
        locked = self._lock.acquire(timeout=self._fetch_timeout_s + 5.0)
        if not locked:
            logger.warning("%s: the acquisition did not let go of the camera; closing it anyway", self._label)
        try:
            if self._closed:
                return
            self._closed = True
            ia, harvester = self._ia, self._harvester
            self._ia = self._harvester = None
            if ia is not None:
                try:
                    ia.destroy()  # stops acquisition first
                except genicam_errors() as exc:
                    logger.warning("%s: destroying the image acquirer failed: %s", self._label, short_reason(exc))
            if harvester is not None:
                try:
                    harvester.reset()
                except genicam_errors() as exc:
                    logger.warning("%s: resetting harvesters failed: %s", self._label, short_reason(exc))
        finally:
            if locked:
                self._lock.release()

    def __enter__(self) -> GenicamCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_rate(access: NodeAccess) -> float | None:
    """The frame rate the camera runs at, frames/s, when its nodes say (None for a free-running rate unknown)."""
    candidates: tuple[str, ...] = ("ResultingFrameRate", "AcquisitionResultingFrameRate", "ResultingFrameRateAbs")
    if access.read("AcquisitionFrameRateEnable") is not False:
        candidates = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs", *candidates)
    for name in candidates:
        value = access.read(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None
