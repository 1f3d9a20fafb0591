"""Frames from a multi-page TIFF, one at a time, without loading the file.

Two ways of reading, chosen when the file is opened:

- **contiguous**: when the first image series is one uncompressed,
  contiguous block that covers every page (what :func:`write_movie`, ImageJ
  and most cameras write), each frame is read with one positional read
  (``os.pread``) into a new array. Nothing stays mapped into the process, so a
  4 GB stack costs one frame of memory, also as the OS counts it (a memory map
  would count every page read as resident);
- **page by page** otherwise (compressed or scattered pages): each page is
  decoded when its frame is asked for.

Damage is an error, never a short movie. tifffile *logs* many problems and
returns partial data instead of raising, so its logger is watched (WARNING and
above) while the file is opened and while each page is read, and anything it
reports becomes a :class:`~plstream.acquire_adapters.base.CorruptInputError`
naming the path, the page and expected versus found. At open, the whole IFD
chain is walked (a break means truncation), and a contiguous series must
fit in the file's size. Errors found at open: not a TIFF, empty, damaged IFD
chain, too short for its frames, unsupported layout, frame larger than
``max_frame_bytes`` (all before any pixel is decoded). Errors found while
iterating: a page that fails to decode (CorruptInputError) or differs in
shape from the first (InputError), both in page-by-page reading only, and a
float frame holding NaN or Inf (CorruptInputError naming the frame).

Frames are 2-D (rows, columns) in the file's dtype, native byte order.
Colour pages become grey: when R, G and B are equal that channel is taken
exactly, otherwise ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 luma; alpha
ignored) rounded to the file's integer type.

Timestamps: ``seq / frame_rate_hz`` when the file states a rate (tifffile
shaped metadata ``frame_rate_hz``, as written by ``write_movie``; ImageJ
``finterval`` or ``fps``), otherwise the time the frame was read (Unix epoch,
as :class:`~plstream.acquire_adapters.base.Frame` defines), with
``frame_rate_hz = None`` in :meth:`TiffStackSource.describe`.

plstream recordings (written by
:class:`~plstream.acquire_adapters.files.recorder.FrameRecorder`,
``docs/recording_format.md``) replay as they were streamed: each frame with
its recorded ``seq`` (gaps stay gaps), timestamp and metadata, and
:meth:`TiffStackSource.describe` with the recorded source's description
(``source`` ``"recording of <kind>"``, ``live`` False). A recording that was
never finalized (its process was killed) replays its pages with
``seq`` = page index, and a warning says the per-frame facts were lost.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plstream.acquire_adapters.base import CorruptInputError, Frame, InputError
from plstream.acquire_adapters.files._recording_format import Recording, frame_rate_hz, parse_recording
from plstream.acquire_adapters.files._tiff_io import (
    check_frame,
    check_layout,
    frame_layout,
    open_tiff,
    tifffile_problems,
    to_grey,
)

__all__ = ["TiffStackSource"]

logger = logging.getLogger(__name__)
_CAMERA_KEYS = ("offset_adu", "gain_adu_per_e", "read_noise_e")


def _declared_frames(series: Any) -> int | None:
    """Number of 2-D frames an image series declares, None when its axes are not a stack of images."""
    try:
        return math.prod(frame_layout(series.axes, series.shape)[0])
    except ValueError:
        return None


class TiffStackSource:
    """A multi-page TIFF as a :class:`~plstream.acquire_adapters.base.FrameSource`.

    Parameters
    ----------
    path : path-like
        The TIFF (``.tif``, ``.tiff``, ``.btf``; BigTIFF included).
    max_frame_bytes : int
        Largest declared size of one stored frame, checked before anything is decoded.

    Raises
    ------
    InputError
        Missing, not a TIFF, or a layout plstream does not read.
    CorruptInputError
        Truncated or damaged (see the module docstring for what is checked when).

    Examples
    --------
    >>> with TiffStackSource("movie.tif") as source:  # doctest: +SKIP
    ...     for frame in source:
    ...         process(frame.data)
    """

    def __init__(self, path: str | os.PathLike[str], *, max_frame_bytes: int = 2**31) -> None:
        self._path = Path(path)
        self._name = str(path)
        self._closed = False
        self._stop_requested = False
        self._contiguous: tuple[int, int, np.dtype, tuple[int, ...]] | None = None  # offset, bytes, dtype, shape
        self._fd: int | None = None
        self._pages: Any = None
        self._recording: Recording | None = None
        self._tif = open_tiff(self._path)
        try:
            self._open(max_frame_bytes)
        except BaseException:
            self._tif.close()
            raise

    def _open(self, max_frame_bytes: int) -> None:
        tif = self._tif
        with tifffile_problems() as problems:
            try:
                n_pages = len(tif.pages)
                series = list(tif.series)
            except Exception as exc:  # damaged IFDs raise from deep inside tifffile
                raise CorruptInputError(self._name, f"is damaged ({exc})") from exc
        declared = _declared_frames(series[0]) if series else None
        if problems:
            expected = f" of the {declared} declared" if declared and declared > n_pages else ""
            raise CorruptInputError(
                self._name,
                f"is truncated or damaged: tifffile reports {problems[0]!r}; found {n_pages} readable pages{expected}",
            )
        if not series or n_pages == 0 or 0 in series[0].shape:
            raise CorruptInputError(self._name, "contains no images")
        self._recording = parse_recording(self._name, tif.pages.first.description)
        first = series[0]
        if "C" in first.axes and first.shape[first.axes.index("C")] > 1:
            raise InputError(
                self._name,
                f"has {first.shape[first.axes.index('C')]} channels (axes {first.axes}); "
                "plstream analyses one channel: save the channel you want on its own",
            )
        if len(series) > 1 and all(
            _declared_frames(s) == 1 and s.shape == first.shape and s.dtype == first.dtype for s in series
        ):
            # one single-image series per page (e.g. frames written one by one with tifffile)
            self._open_pages(tif.pages, n_pages, max_frame_bytes)
        else:
            if len(series) > 1:
                logger.warning(
                    "%s holds %d image series; reading the first (%s, axes %s)",
                    self._name,
                    len(series),
                    first.shape,
                    first.axes,
                )
            if declared is None:
                raise InputError(self._name, f"axes {first.axes!r} are not a stack of 2-D images")
            offset = first.dataoffset
            if offset is not None:
                self._open_contiguous(first, offset, max_frame_bytes)
            else:
                self._open_pages(first, declared, max_frame_bytes)
        if self._recording is not None:
            self._check_recording(self._recording)
        self._frame_rate_hz, self._camera = self._metadata()

    def _check_recording(self, recording: Recording) -> None:
        facts = recording.facts
        if facts.get("shape") != list(self._shape) or facts.get("dtype") != self._dtype.name:
            raise CorruptInputError(
                self._name,
                f"its recording metadata says {facts.get('shape')} {facts.get('dtype')} frames, "
                f"its pages are {list(self._shape)} {self._dtype.name}",
            )
        if recording.finalized and recording.n_frames != self._n_frames:
            raise CorruptInputError(
                self._name, f"its recording metadata lists {recording.n_frames} frames, it holds {self._n_frames}"
            )
        if not recording.finalized:
            logger.warning(
                "%s is a plstream recording that was not finalized (its recording process ended before close(), "
                "or could not write the final metadata): replaying its %d frames with seq = page index; their "
                "recorded seq, timestamps and metadata were lost",
                self._name,
                self._n_frames,
            )

    def _open_contiguous(self, series: Any, offset: int, max_frame_bytes: int) -> None:
        lead, frame_shape, self._sample_axis = frame_layout(series.axes, series.shape)
        dtype = np.dtype(series.dtype)
        check_layout(self._name, dtype, frame_shape, self._sample_axis, max_frame_bytes)
        n_frames = math.prod(lead)
        frame_bytes = math.prod(frame_shape) * dtype.itemsize
        size = self._path.stat().st_size
        if offset + n_frames * frame_bytes > size:
            complete = max(0, (size - offset) // frame_bytes)
            raise CorruptInputError(
                self._name,
                f"is truncated: {n_frames} frames of {frame_bytes} bytes from offset {offset} need "
                f"{offset + n_frames * frame_bytes} bytes, the file has {size} (only {complete} complete frames)",
            )
        self._fd = os.open(self._path, os.O_RDONLY)
        self._contiguous = (offset, frame_bytes, dtype.newbyteorder(self._tif.byteorder), tuple(frame_shape))
        self._finish_layout(n_frames, frame_shape, dtype)

    def _open_pages(self, pages: Any, declared: int, max_frame_bytes: int) -> None:
        page = pages[0]
        try:
            lead, frame_shape, self._sample_axis = frame_layout(page.axes, page.shape)
        except ValueError as exc:
            raise InputError(self._name, f"page 0: {exc}; plstream reads stacks of grey or RGB images") from exc
        if lead:
            raise InputError(self._name, f"page 0 holds a {page.axes} volume; plstream reads stacks of 2-D images")
        dtype = np.dtype(page.dtype)
        check_layout(self._name, dtype, frame_shape, self._sample_axis, max_frame_bytes)
        if len(pages) < declared:
            raise CorruptInputError(self._name, f"declares {declared} frames but holds only {len(pages)} pages")
        self._pages = pages
        self._finish_layout(declared, frame_shape, dtype)

    def _finish_layout(self, n_frames: int, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._n_frames = n_frames
        self._stored_shape = frame_shape
        self._dtype = dtype
        self._shape = self._grey_shape(frame_shape)

    def _grey_shape(self, frame_shape: tuple[int, ...]) -> tuple[int, int]:
        if self._sample_axis is None:
            return (frame_shape[0], frame_shape[1])
        rest = [n for axis, n in enumerate(frame_shape) if axis != self._sample_axis]
        return (rest[0], rest[1])

    def _metadata(self) -> tuple[float | None, dict[str, float] | None]:
        """Frame rate (Hz) and camera model stated by the file, if any."""
        rate = None
        camera = None
        shaped = self._tif.shaped_metadata or ()
        if self._recording is not None:  # the recorded source's facts
            shaped = ({**self._recording.source, "frame_rate_hz": frame_rate_hz(self._recording.source)},)
        if shaped and isinstance(shaped[0], dict):
            meta = shaped[0]
            rate = meta.get("frame_rate_hz")
            if isinstance(meta.get("camera"), dict):
                values = meta["camera"]
                if all(isinstance(values.get(key), (int, float)) for key in _CAMERA_KEYS):
                    camera = {key: float(values[key]) for key in _CAMERA_KEYS}
        imagej = self._tif.imagej_metadata or {}
        try:
            if rate is None and imagej.get("finterval"):
                rate = 1.0 / float(imagej["finterval"])
            elif rate is None and imagej.get("fps"):
                rate = float(imagej["fps"])
        except (TypeError, ValueError, ZeroDivisionError):
            logger.info("%s: ignoring unreadable ImageJ frame interval %r", self._name, imagej.get("finterval"))
            rate = None
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            rate = None
        return (float(rate) if rate is not None else None), camera

    @property
    def contiguous(self) -> bool:
        """True when frames are read directly from one contiguous block (False: decoded page by page)."""
        return self._contiguous is not None

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self._n_frames

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message."""
        description: dict[str, Any] = {
            "source": "tiff_stack",
            "path": str(self._path),
            "shape": list(self._shape),
            "dtype": self._dtype.name,
            "n_frames": self._n_frames,
            "frame_rate_hz": self._frame_rate_hz,
        }
        if self._camera is not None:
            description["camera"] = dict(self._camera)
        if self._recording is not None:
            description = self._describe_recording(self._recording, description)
        return description

    def _describe_recording(self, recording: Recording, description: dict[str, Any]) -> dict[str, Any]:
        """The recorded source's description, saying it is a lossless replay of a recording of it."""
        kind = str(recording.source.get("source", "an unnamed source"))
        facts = recording.facts
        about: dict[str, Any] = {
            "recording_version": facts["recording_version"],
            "finalized": recording.finalized,
            "writer": facts.get("writer"),
        }
        if recording.finalized:
            about["not_recorded"] = facts.get("not_recorded")
        replay = dict(recording.source)
        replay.update(
            {key: description[key] for key in ("path", "shape", "dtype", "n_frames", "frame_rate_hz")},
            source=f"recording of {kind}",
            recorded_source=kind,
            live=False,
            recording=about,
        )
        return replay

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as a grey 2-D array (native byte order, C-contiguous)."""
        if self._closed:
            raise ValueError(f"{self._name}: the source is closed; open it again")
        if not 0 <= index < self._n_frames:
            raise IndexError(f"frame {index} is outside {self._name} (0..{self._n_frames - 1})")
        if self._contiguous is not None:
            stored = self._read_contiguous(index)
        else:
            stored = self._read_page(index)
        return check_frame(self._name, to_grey(stored, self._sample_axis), index)

    def _read_contiguous(self, index: int) -> np.ndarray:
        assert self._contiguous is not None and self._fd is not None
        offset, frame_bytes, stored_dtype, frame_shape = self._contiguous
        data = os.pread(self._fd, frame_bytes, offset + index * frame_bytes)
        if len(data) != frame_bytes:
            raise CorruptInputError(
                self._name, f"frame {index} is cut short: {len(data)} of {frame_bytes} bytes could be read"
            )
        return np.frombuffer(data, dtype=stored_dtype).reshape(frame_shape).astype(self._dtype, order="C")

    def _read_page(self, index: int) -> np.ndarray:
        with tifffile_problems() as problems:
            try:
                page = self._pages[index]
                if page is None:
                    raise CorruptInputError(self._name, f"page {index} of {self._n_frames} is missing")
                shape, dtype = tuple(page.shape), np.dtype(page.dtype)
                data = page.asarray() if shape == self._stored_shape and dtype == self._dtype else None
            except CorruptInputError:
                raise
            except Exception as exc:  # decoders raise many types on damaged data
                raise CorruptInputError(self._name, f"page {index} cannot be decoded ({exc})") from exc
        if problems:
            raise CorruptInputError(self._name, f"page {index} is damaged: tifffile reports {problems[0]!r}")
        if data is None:
            raise InputError(
                self._name,
                f"page {index} is {shape} {dtype}, page 0 is {self._stored_shape} "
                f"{self._dtype}; plstream reads stacks whose pages all match",
            )
        return data

    def __iter__(self) -> Iterator[Frame]:
        """Yield every frame in order (a fresh pass each time it is called)."""
        rate = self._frame_rate_hz
        recorded = self._recording if self._recording is not None and self._recording.finalized else None
        for index in range(self._n_frames):
            if self._closed or self._stop_requested:
                return
            data = self.read(index)
            if recorded is not None:
                assert recorded.seqs is not None and recorded.timestamps is not None
                assert recorded.frame_metadata is not None
                yield Frame(
                    seq=int(recorded.seqs[index]),
                    timestamp=float(recorded.timestamps[index]),
                    data=data,
                    metadata=dict(recorded.frame_metadata[index]),
                )
            else:
                timestamp = index / rate if rate else time.time()
                yield Frame(seq=index, timestamp=timestamp, data=data, metadata={})

    def stop(self) -> None:
        """End an iteration in progress before its next frame; safe from another thread."""
        self._stop_requested = True

    def close(self) -> None:
        """Release the file; safe to call twice."""
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tif.close()

    def __enter__(self) -> TiffStackSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
