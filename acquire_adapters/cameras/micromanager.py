"""Any camera Micro-Manager drives, through pymmcore-plus, as a frame source.

:class:`MicroManagerCamera` opens a Micro-Manager core (``CMMCorePlus``, or
``UniMMCore`` when the configuration file declares Python devices with
``#py`` lines), or drives a core it is given, applies the exposure, binning,
ROI and circular-buffer size, and then reads MMCore's own sequence
acquisition: ``startContinuousSequenceAcquisition`` and
``popNextImageMD`` from the circular buffer, with each image's metadata.
pymmcore-plus is optional: ``pip install 'plstream[micromanager]'``.

Acquisition mode, and what a full buffer does
----------------------------------------------
Continuous ("live") sequence acquisition: the camera runs until stopped and
does not stop when the circular buffer overflows (C++ cameras run
``StartSequenceAcquisition(LONG_MAX, interval, stopOnOverflow=false)``;
UniMMCore starts Python cameras with ``stop_on_overflow=False``). A consumer
that falls behind therefore loses images instead of ending the run, and
every lost image is a gap in ``seq``: ``seq`` is the image's
``ImageNumber`` tag (numbered by the core, per camera, in acquisition order,
from 0 when the sequence starts) minus the first one popped. How each core
overflows (read in their sources and, for UniMMCore, measured by
``tests/acquire_adapters/test_micromanager.py``):

- **UniMMCore** (Python camera devices; pymmcore-plus 0.18): its
  ``SequenceBuffer`` evicts the *oldest* unread image for each new one, so
  the buffer always holds the newest ``capacity`` images; ImageNumber keeps
  counting, so the images pushed out are exactly the missing seqs.
  ``isBufferOverflowed()`` stays true from the first eviction until the next
  sequence starts. Measured (1 MB buffer = 32 images of 128 x 128 uint16,
  200 frames/s, images 0-4 read, then nothing until the camera had sent 77):
  the buffer held images 45-76, the next frame read was seq 45, and the 40
  images 5-44 were one gap; at the end, 103 sent = 60 read + 3 left in the
  buffer + 40 lost.
- **C++ MMCore since late April 2026** (pymmcore 12.5.0.75.0 and later; the
  C++ cameras such as DemoCamera): ``CircularBuffer::InsertImage`` in overwrite
  mode (which continuous acquisition sets) *clears the whole buffer* when it
  is full and then inserts the new image: every unread image (the buffer's
  full capacity) is lost at once. The clear also resets the overflow flag,
  so ``isBufferOverflowed()`` stays false in this mode. ImageNumber is kept by
  ``CoreCallback`` and reset only when a sequence starts (or a caller clears
  the buffer), so it runs on across the clear: the lost images are one gap
  of exactly the buffer's capacity.
- **Older C++ MMCore** (pymmcore 12.4 and earlier): the same clear when
  full (done by the core since March 2025; before, by camera adapters such as
  DemoCamera themselves, while others stop, which ends the run with an
  error), but the clear also restarted ImageNumber (and the core's
  ``ElapsedTime-ms``) at 0. When the
  image number goes back, this adapter numbers on from the last seq plus the
  buffer's capacity: a lower bound on what was lost (more if the buffer was
  cleared more than once before the next pop), logged as such.

Each gap is logged with its size, and the first time ``isBufferOverflowed()``
reports true it is logged too. :attr:`MicroManagerCamera.frames_lost` counts
the missing seqs; the stream downstream counts the same gaps from ``seq``.

Per frame
---------
``Frame.timestamp`` is the core's ``TimeReceivedByCore`` tag (host wall
clock when the image entered the circular buffer, local time with
microseconds, converted to Unix epoch seconds), or the host time when the
image was popped if that tag is missing or unusable (logged once).
``ElapsedTime-ms`` is kept in the metadata but not used as the time base:
cameras may stamp it from their own start, and older cores restart it on
every overflow. ``Frame.metadata``: ``image_number``, ``elapsed_ms`` (when
tagged), ``exposure_ms``, ``camera`` (label), ``roi_px`` ([x, y, width,
height]) and ``binning``, from the image's tags where the camera or core
wrote them, else the values in force when the acquisition started.

Describe
--------
:meth:`MicroManagerCamera.describe` is final when the constructor returns:
``source`` "micromanager", ``shape``, ``dtype`` (uint8, uint16 or uint32 by
bytes per pixel; colour cameras are refused), ``n_frames`` None, ``live``
True, ``pixel_size_um`` (the core's pixel size, binning included, when a
pixel-size configuration matches), ``frame_interval_s`` and
``frame_rate_hz`` with ``frame_interval_from`` saying which clue they come
from ("ActualInterval-ms" when the camera reports a positive one, else
"exposure", which leaves out readout time), ``camera`` (the photon model:
only the keys the device states in the properties named by
:data:`PHOTON_MODEL_PROPERTIES`; Micro-Manager has no standard for them, so
other cameras report none and plstream estimates them), ``device`` (label,
library, name, description, pixel type, bit depth, binning, exposure, ROI)
and ``buffer_frames`` (the circular buffer's capacity in images).

Errors are :class:`~plstream.acquire_adapters.base.CameraError` (an
:class:`~plstream.acquire_adapters.base.InputError`) with one line that
says what to do: configuration file missing or refused, no device adapters
found, no or unknown camera (the loaded cameras are listed), a colour
camera, a setting the camera refused (its allowed values are listed), and,
while iterating, a camera that stops delivering (its sequence ends or the
device is unloaded): the iteration raises with the number of frames
delivered so far and never waits forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from plstream.acquire_adapters.base import CameraError, Frame
from plstream.acquire_adapters.cameras._mm_images import (
    TAG_IMAGE_NUMBER,
    TAG_TIME_IN_CORE,
    FrameDefaults,
    ImageNumbering,
    frame_metadata,
    frame_time,
    number,
)
from plstream.acquire_adapters.cameras._mm_setup import (
    PHOTON_MODEL_PROPERTIES,
    choose_camera,
    configure,
    first_line,
    open_core,
    read_state,
)

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

__all__ = ["PHOTON_MODEL_PROPERTIES", "MicroManagerCamera"]

logger = logging.getLogger(__name__)


class MicroManagerCamera:
    """A camera driven by Micro-Manager's core, as a :class:`~plstream.acquire_adapters.base.FrameSource`.

    The arguments mirror ``[camera.micromanager]`` in the settings. The camera
    is opened and configured here, so :meth:`describe` is final on return.

    Parameters
    ----------
    config : str
        Micro-Manager hardware configuration file (``MMConfig.cfg``) to load;
        "" = use ``core`` as it is configured.
    camera : str
        Camera device label; "" = the core's current camera (or the only
        camera loaded).
    adapter_path : str
        Folder of Micro-Manager's device adapters; "" = the installation
        pymmcore-plus finds (``mmcore install``, ``MICROMANAGER_PATH``, or a
        Micro-Manager in its usual place). Used only when a core is created here.
    exposure_ms : float, optional
        Exposure in ms; None leaves the configuration's.
    binning : int, optional
        Binning (1, 2, 4, ...); None leaves the configuration's.
    roi_px : (x, y, width, height), optional
        Region of interest in (binned) camera pixels; None leaves the
        configuration's.
    buffer_mb : int
        Size of MMCore's circular buffer, MB. Images that arrive while it is
        full are lost and show as gaps (see the module notes).
    core : pymmcore_plus.CMMCorePlus, optional
        A core to drive (``UniMMCore`` for Python camera devices). Without
        it a core is created, which needs ``config``. Devices loaded here
        from ``config`` are unloaded by :meth:`close`; a core given without
        ``config`` keeps its devices.
    poll_s : float
        How long an iteration waits between looks into an empty buffer, s.
    wall_clock : callable
        Epoch clock (seconds) for the acquisition start and for images without
        a usable ``TimeReceivedByCore`` tag.

    Raises
    ------
    InputError
        pymmcore-plus is not installed.
    CameraError
        The camera cannot be opened or configured; the message says what to do.
    """

    def __init__(
        self,
        *,
        config: str = "",
        camera: str = "",
        adapter_path: str = "",
        exposure_ms: float | None = None,
        binning: int | None = None,
        roi_px: tuple[int, int, int, int] | None = None,
        buffer_mb: int = 1024,
        core: CMMCorePlus | None = None,
        poll_s: float = 0.001,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if exposure_ms is not None and not (number(exposure_ms) or 0) > 0:
            raise ValueError(f"exposure_ms must be > 0, got {exposure_ms!r}")
        if binning is not None and (isinstance(binning, bool) or int(binning) != binning or binning < 1):
            raise ValueError(f"binning must be an integer >= 1, got {binning!r}")
        if roi_px is not None:
            if len(roi_px) != 4 or any(int(v) != v for v in roi_px) or min(roi_px[:2]) < 0 or min(roi_px[2:]) < 1:
                raise ValueError(f"roi_px must be (x, y, width, height) in px with width, height >= 1, got {roi_px!r}")
            roi_px = (int(roi_px[0]), int(roi_px[1]), int(roi_px[2]), int(roi_px[3]))
        if isinstance(buffer_mb, bool) or int(buffer_mb) != buffer_mb or buffer_mb < 1:
            raise ValueError(f"buffer_mb must be an integer >= 1, got {buffer_mb!r}")
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
        self._poll_s = float(poll_s)
        self._wall_clock = wall_clock
        self._stop_requested = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._close_lock = threading.Lock()
        self._closed = False
        self._numbering: ImageNumbering | None = None
        self._name = "micromanager"
        self._core, self._owns_devices = open_core(config, adapter_path, core)
        try:
            self._label = choose_camera(self._core, camera)
            self._name = f"micromanager camera {self._label!r}"
            configure(self._core, self._label, exposure_ms, binning, roi_px, int(buffer_mb))
            self._state = read_state(self._core, self._label)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ the interface
    @property
    def core(self) -> CMMCorePlus:
        """The Micro-Manager core this camera is driven through."""
        return self._core

    @property
    def label(self) -> str:
        """The camera's device label."""
        return self._label

    @property
    def frames_lost(self) -> int:
        """Images lost in MMCore's circular buffer (missing seqs) in the current or last iteration."""
        return self._numbering.lost if self._numbering is not None else 0

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message (see the module notes)."""
        description = dict(self._state.description)
        for key in ("camera", "device"):
            if key in description:
                description[key] = dict(description[key])
        return description

    def __iter__(self) -> Iterator[Frame]:
        """Start a continuous sequence acquisition and yield its images until :meth:`stop` or :meth:`close`.

        Raises
        ------
        CameraError
            The acquisition cannot start, or the camera stops delivering (its
            sequence ends, or the device is unloaded); the message gives the
            number of frames delivered.
        """
        if self._closed:
            raise ValueError("this MicroManagerCamera is closed; create a new one")
        if not self._idle.is_set():
            raise RuntimeError("this MicroManagerCamera is already being iterated")
        self._idle.clear()
        try:
            self._stop_requested.clear()
            started = self._wall_clock()
            try:
                self._core.startContinuousSequenceAcquisition(0)
            except (RuntimeError, ValueError) as exc:
                raise CameraError(self._name, f"cannot start the acquisition: {first_line(exc)}") from exc
            logger.info(
                "%s: acquiring %dx%d %s, exposure %.4g ms, circular buffer %d images",
                self._name,
                self._state.shape[1],
                self._state.shape[0],
                self._state.dtype.name,
                self._state.exposure_ms,
                self._state.capacity,
            )
            yield from self._frames(started)
        finally:
            self._stop_sequence()
            self._idle.set()

    def _frames(self, started: float) -> Iterator[Frame]:
        core, label = self._core, self._label
        numbering = self._numbering = ImageNumbering(self._state.capacity, self._name)
        state = self._state
        defaults = FrameDefaults(label, state.exposure_ms, state.binning, state.roi_px)
        delivered = 0
        overflow_logged = warned_time = False
        while not self._stop_requested.is_set():
            if core.getRemainingImageCount() == 0:
                self._check_still_delivering(delivered)
                if not overflow_logged and core.isBufferOverflowed():
                    overflow_logged = True
                    logger.warning("%s: MMCore's circular buffer overflowed; lost images show as gaps", self._name)
                self._stop_requested.wait(self._poll_s)
                continue
            try:
                image, tag_map = core.popNextImageAndMD(fix=False)
            except (IndexError, RuntimeError) as exc:
                if core.getRemainingImageCount() == 0:
                    continue  # emptied between the count and the pop (an older core clearing a full buffer)
                raise CameraError(self._name, f"cannot read image {delivered}: {first_line(exc)}") from exc
            popped_at = self._wall_clock()
            if image.shape != state.shape or image.dtype != state.dtype:
                raise CameraError(
                    self._name,
                    f"image {delivered} is {image.shape} {image.dtype}, not {state.shape} {state.dtype.name} as when "
                    "the camera was opened; do not change the camera's format while plstream runs",
                )
            tags = {str(key): tag_map[key] for key in tag_map}
            image_number = number(tags.get(TAG_IMAGE_NUMBER))
            seq = numbering.seq(image_number)
            timestamp = frame_time(tags, started, popped_at)
            if timestamp is None:
                if not warned_time:
                    warned_time = True
                    logger.warning(
                        "%s: unusable %s tag %r; timestamps are the host time when each image is read",
                        self._name,
                        TAG_TIME_IN_CORE,
                        tags.get(TAG_TIME_IN_CORE),
                    )
                timestamp = popped_at
            delivered += 1
            metadata = frame_metadata(seq if image_number is None else int(image_number), tags, defaults)
            yield Frame(seq=seq, timestamp=timestamp, data=np.ascontiguousarray(image), metadata=metadata)

    def _check_still_delivering(self, delivered: int) -> None:
        """Raise when the buffer is empty and no image can come: the camera was unloaded or its sequence ended."""
        core = self._core
        if self._label not in core.getLoadedDevices():
            raise CameraError(
                self._name,
                f"the camera was unloaded after {delivered} frames; it must stay loaded while plstream runs",
            )
        if not core.isSequenceRunning() and core.getRemainingImageCount() == 0:
            raise CameraError(
                self._name,
                f"the camera stopped delivering images after {delivered} frames (its sequence acquisition "
                "ended); check the camera and Micro-Manager's log, then start again",
            )

    def _stop_sequence(self) -> None:
        core = self._core
        try:
            if core.isSequenceRunning():
                core.stopSequenceAcquisition(self._label)
        except (RuntimeError, ValueError) as exc:
            logger.warning("%s: stopping the acquisition failed: %s", self._name, first_line(exc))

    def stop(self) -> None:
        """End an iteration in progress within about ``poll_s``; safe from another thread."""
        self._stop_requested.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the acquisition and unload what this object loaded; safe to call twice and from another thread.

        An iteration running in another thread is asked to stop and waited
        for (up to ``timeout_s``) before devices are unloaded.
        """
        self._stop_requested.set()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            if not self._idle.wait(timeout_s):
                logger.warning("%s: an iteration did not end within %.1f s of close()", self._name, timeout_s)
            core = getattr(self, "_core", None)
            if core is None:
                return
            if hasattr(self, "_label"):
                self._stop_sequence()
            if self._owns_devices:
                try:
                    core.unloadAllDevices()
                except (RuntimeError, ValueError) as exc:
                    logger.warning("%s: unloading the devices failed: %s", self._name, first_line(exc))

    def __enter__(self) -> MicroManagerCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
