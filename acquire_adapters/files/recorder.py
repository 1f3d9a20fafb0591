"""Record every raw frame of a live session, losslessly, to an OME-TIFF (BigTIFF) beside the analysis.

:class:`FrameRecorder` takes frames from the analysis thread without ever
waiting for the disk: :meth:`~FrameRecorder.record` copies the frame into a
queue bounded in bytes and returns; a writer thread appends it to the file as
one TIFF page. When the queue is full (the disk cannot keep up) the frame is
not recorded, and counted; a write error (disk full, file-size limit, I/O
error) ends the recording, once logged, and the frames written stay readable.

The file is a plain TIFF stack after every page (a killed process leaves a
readable file), and becomes an OME-TIFF at :meth:`~FrameRecorder.close`, which
adds the per-frame ``seq``, timestamp and metadata and the source's
description. ``plstream replay`` (:class:`~plstream.acquire_adapters.files.tiff_stack.TiffStackSource`)
replays it as it was streamed. The format is ``docs/recording_format.md``.

Examples
--------
>>> recorder = FrameRecorder("run.raw.ome.tif", description=source.describe())  # doctest: +SKIP
>>> for frame in source:  # doctest: +SKIP
...     recorder.record(frame.seq, frame.timestamp, frame.data, frame.metadata)
...     analyse(frame)
>>> recorder.close()  # doctest: +SKIP
{'frames_recorded': 1000, 'dropped_queue_full': 0, ...}
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from plstream.acquire_adapters.base import InputError
from plstream.acquire_adapters.files import _recording_format as fmt
from plstream.acquire_adapters.files._bigtiff_pages import BigTiffPages, create_new

__all__ = ["RECORDING_VERSION", "FrameRecorder"]

logger = logging.getLogger(__name__)

#: Version of the recording format written (``docs/recording_format.md``).
RECORDING_VERSION = fmt.RECORDING_VERSION
_LOG_INTERVAL_S = 5.0  # at most one "not recorded" log line per cause this often
# Written frames' buffers are kept for reuse up to this many bytes: a fresh buffer costs the
# caller page faults (~0.6 ms for 512 KiB on a small VM, ten times the copy itself).
_SPARE_BYTES = 64 * 2**20


def _size(nbytes: int) -> str:
    """Bytes in words: ``512 MB``, ``4.6 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def _frame_layout(description: dict[str, Any]) -> tuple[tuple[int, int], np.dtype]:
    """(rows, cols) and dtype from a source description; ValueError naming what is wrong."""
    shape = description.get("shape")
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 2
        or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise ValueError(f"the source description's 'shape' must be [rows, cols] of positive integers, got {shape!r}")
    try:
        dtype = np.dtype(description["dtype"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the source description's 'dtype' {description.get('dtype')!r} is not a numpy type") from exc
    return (int(shape[0]), int(shape[1])), dtype


class _RateLimitedLog:
    """Logs a repeated problem once, then at most every ``interval_s`` seconds with the count in between."""

    def __init__(self, clock: Callable[[], float], interval_s: float) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last: float | None = None
        self._since = 0

    def due(self) -> int:
        """Count one occurrence; the occurrences to report when a line is due now, else 0."""
        self._since += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            return 0
        self._last, since, self._since = now, self._since, 0
        return since


class FrameRecorder:
    """Writes the frames handed to :meth:`record` to a new OME-TIFF (BigTIFF), in a thread of its own.

    Parameters
    ----------
    path : path-like
        The recording to create (``.ome.tif`` by convention). Never overwritten.
    description : dict
        The source's :meth:`~plstream.acquire_adapters.base.FrameSource.describe`
        dict: ``shape`` ([rows, cols]) and ``dtype`` fix what frames are
        accepted; everything in it (frame rate or interval, pixel size, device,
        camera photon model, ...) is kept in the file for the replay.
    queue_bytes : int
        Memory for frames waiting to be written, bytes. A frame that finds it
        full is not recorded (``dropped_queue_full``). The buffers of written
        frames are kept for reuse, up to 64 MB (a fresh buffer costs the caller
        page faults).
    before_write : callable, optional
        Called in the writer thread with each frame's ``seq`` before it is
        written; lets tests hold the writer (a slow disk) deterministically.
    clock : callable
        Seconds (monotonic), for rate-limiting log lines.

    Raises
    ------
    InputError
        The file exists, or its folder is missing or not writable (the message says what to do).
    ValueError
        The description lacks a usable ``shape`` or ``dtype`` (OME-TIFF holds
        (u)int8/16/32, float32 and float64), or ``queue_bytes`` < 1.

    Notes
    -----
    :attr:`counters` (a fresh dict, readable from any thread) and the dict
    :meth:`close` returns hold: ``frames_recorded``; ``dropped_queue_full``;
    ``dropped_write_error`` (frames not recorded because an earlier write
    failed, the failing frame included); ``refused`` (wrong shape or dtype,
    unusable seq or timestamp, or handed in after ``close``); ``write_error``
    (the first write error, "" if none); ``path``; ``bytes_written`` (the
    file's size).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        description: dict[str, Any],
        queue_bytes: int = 512 * 2**20,
        before_write: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path)
        self._shape, self._dtype = _frame_layout(description)
        self._facts = fmt.header(description, self._shape, self._dtype)
        if queue_bytes < 1:
            raise ValueError(f"queue_bytes must be at least 1, got {queue_bytes}")
        self._queue_bytes = int(queue_bytes)
        self._before_write = before_write
        self._pages = BigTiffPages(
            self._create(),
            self._shape,
            self._dtype,
            fmt.placeholder_description(self._facts),
            self._facts["writer"],
        )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[int, float, np.ndarray, str]] = collections.deque()
        self._queued_bytes = 0
        self._spare: list[np.ndarray] = []  # written frames' buffers, reused by record()
        self._spare_max = max(1, min(_SPARE_BYTES, self._queue_bytes) // max(1, self._pages.frame_bytes))
        self._closing = False
        self._failed = False
        self._counters: dict[str, Any] = {
            "frames_recorded": 0,
            "dropped_queue_full": 0,
            "dropped_write_error": 0,
            "refused": 0,
            "write_error": "",
            "path": str(self._path),
            "bytes_written": self._pages.size,
        }
        # per recorded frame, kept for close(): runs of seq, timestamps (8 bytes each), metadata as JSON
        self._seqs = fmt.SeqRuns()
        self._timestamps = array("d")
        self._metadata_json: list[str] = []
        self._full_log = _RateLimitedLog(clock, _LOG_INTERVAL_S)
        self._refused_log = _RateLimitedLog(clock, _LOG_INTERVAL_S)
        self._close_lock = threading.Lock()
        self._result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name=f"recorder {self._path.name}", daemon=True)
        self._thread.start()

    def _create(self) -> Any:
        where = self._path.parent
        try:
            return create_new(self._path)
        except FileExistsError:
            raise InputError(
                str(self._path), "already exists; a recording never overwrites a file: choose a new path"
            ) from None
        except FileNotFoundError:
            raise InputError(
                str(self._path), f"cannot be created: the folder {where} does not exist; create it"
            ) from None
        except PermissionError:
            raise InputError(
                str(self._path), f"cannot be created: no permission to write in {where}; choose a writable folder"
            ) from None
        except OSError as exc:
            raise InputError(str(self._path), f"cannot be created ({exc.strerror or exc})") from None

    # ------------------------------------------------------------------ caller side
    @property
    def path(self) -> Path:
        """The recording file."""
        return self._path

    @property
    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters (see the class notes); safe from any thread."""
        with self._lock:
            return dict(self._counters)

    def record(self, seq: int, timestamp: float, data: np.ndarray, metadata: dict[str, Any]) -> bool:
        """Queue one frame for writing; never waits for the disk.

        Parameters
        ----------
        seq : int
            The frame's number in the stream (gaps and jumps are kept as they are).
        timestamp : float
            Its acquisition time, s.
        data : numpy.ndarray
            The 2-D frame, of the description's shape and dtype (any byte order); copied.
        metadata : dict
            Its small per-frame metadata (e.g. the camera's frame ID), stored as JSON.

        Returns
        -------
        bool
            True when the frame was queued; False when it was refused, found
            the queue full, or the recording has stopped (each counted).
        """
        problem = self._problem(seq, timestamp, data)
        if problem is None:
            try:
                metadata_json = fmt.dumps(dict(metadata))
            except (TypeError, ValueError) as exc:
                problem = f"metadata cannot be stored as JSON ({exc})"
        if problem is not None:
            self._refuse(seq, problem)
            return False
        nbytes = int(data.nbytes)
        if not self._admit(seq, nbytes, None):
            return False
        with self._lock:
            buffer = self._spare.pop() if self._spare else None
        if buffer is None:
            buffer = np.empty(self._shape, self._dtype.newbyteorder("<"))
        np.copyto(buffer, data)
        if self._admit(seq, nbytes, (int(seq), float(timestamp), buffer, metadata_json)):
            return True
        self._recycle(buffer)
        return False

    def _recycle(self, buffer: np.ndarray) -> None:
        with self._lock:
            if len(self._spare) < self._spare_max:
                self._spare.append(buffer)

    def _problem(self, seq: Any, timestamp: Any, data: Any) -> str | None:
        if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)):
            return f"seq {seq!r} is not an integer"
        if (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, (int, float, np.integer, np.floating))
            or not math.isfinite(timestamp)
        ):
            return f"timestamp {timestamp!r} is not a finite number"
        if not isinstance(data, np.ndarray):
            return f"data is a {type(data).__name__}, not a numpy array"
        if data.shape != self._shape or data.dtype.newbyteorder("=") != self._dtype.newbyteorder("="):
            return f"it is {data.shape} {data.dtype}, the recording holds {self._shape} {self._dtype}"
        return None

    def _refuse(self, seq: Any, problem: str) -> None:
        with self._lock:
            self._counters["refused"] += 1
            total = self._counters["refused"]
            due = self._refused_log.due()
        if due:
            logger.warning("%s: frame seq %s not recorded: %s (%d refused in all)", self._path, seq, problem, total)

    def _admit(self, seq: int, nbytes: int, item: tuple[int, float, np.ndarray, str] | None) -> bool:
        """Check there is room (``item`` None) or queue ``item``; count and log what is turned away."""
        with self._lock:
            if self._failed:
                self._counters["dropped_write_error"] += 1
                return False
            if not self._closing and self._queued_bytes + nbytes <= self._queue_bytes:
                if item is not None:
                    self._queue.append(item)
                    self._queued_bytes += nbytes
                    self._wake.notify()
                return True
            if self._closing:
                self._counters["refused"] += 1
                due = self._refused_log.due()
            else:
                self._counters["dropped_queue_full"] += 1
                dropped, due = self._counters["dropped_queue_full"], self._full_log.due()
        if due and self._closing:
            logger.warning("%s: frame seq %s not recorded: the recording is closed", self._path, seq)
        elif due:
            logger.warning(
                "%s: the disk cannot keep up with the frames: %d not recorded since the last report "
                "(%d in all; the write queue of %s is full)",
                self._path,
                due,
                dropped,
                _size(self._queue_bytes),
            )
        return False

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        try:
            self._write_queue()
        except Exception as exc:  # any: the writer must end counted and logged, never silently
            logger.exception("%s: the recorder's writer stopped unexpectedly", self._path)
            self._stop_writing(f"unexpected error in the writer: {exc!r}")

    def _write_queue(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                seq, timestamp, data, metadata_json = self._queue.popleft()  # its bytes count until written
            try:
                if self._before_write is not None:
                    self._before_write(seq)
                self._write(seq, timestamp, data, metadata_json)
            finally:
                with self._lock:
                    self._queued_bytes -= data.nbytes
                self._recycle(data)

    def _write(self, seq: int, timestamp: float, data: np.ndarray, metadata_json: str) -> None:
        if self._failed:
            with self._lock:
                self._counters["dropped_write_error"] += 1
            return
        try:
            self._pages.append(data)
        except OSError as exc:
            logger.error(
                "%s: recording stopped: frame seq %d could not be written (%s); the %d frames before it stay "
                "readable, later frames are not recorded; the analysis goes on",
                self._path,
                seq,
                exc,
                self._pages.pages,
            )
            self._stop_writing(f"frame seq {seq}: {exc}", in_hand=1)
            return
        self._seqs.append(seq)
        self._timestamps.append(timestamp)
        self._metadata_json.append(metadata_json)
        with self._lock:
            self._counters["frames_recorded"] += 1
            self._counters["bytes_written"] = self._pages.size

    def _stop_writing(self, error: str, in_hand: int = 0) -> None:
        """After a write error: the ``in_hand`` frame that failed and every queued one count as not recorded."""
        with self._lock:
            self._failed = True
            if not self._counters["write_error"]:
                self._counters["write_error"] = error
            self._counters["dropped_write_error"] += in_hand + len(self._queue)
            self._queued_bytes -= sum(item[2].nbytes for item in self._queue)
            self._queue.clear()

    # ------------------------------------------------------------------ end
    def close(self) -> dict[str, Any]:
        """Write what is queued, finalize the file (OME-XML with every frame's facts) and close it.

        Returns
        -------
        dict
            The final counters (see the class notes). Safe to call twice: the
            second call returns the same counters.
        """
        with self._close_lock:
            if self._result is not None:
                return dict(self._result)
            with self._lock:
                self._closing = True
                self._wake.notify_all()
            self._thread.join()
            self._finish()
            self._result = self.counters
            return dict(self._result)

    def _finish(self) -> None:
        n = self._pages.pages
        try:
            if n:
                self._pages.replace_description(self._final_description())
            self._pages.flush_to_disk()
        except OSError as exc:
            logger.error(
                "%s: the recording could not be finalized (%s): its %d frames stay readable as a plain TIFF "
                "stack, but their seq, timestamps and metadata are lost",
                self._path,
                exc,
                n,
            )
            with self._lock:
                if not self._counters["write_error"]:
                    self._counters["write_error"] = f"finalizing: {exc}"
        finally:
            self._pages.close()
        with self._lock:
            self._counters["bytes_written"] = self._pages.size
        if n == 0:
            logger.warning("%s: no frame was recorded; the file holds no image", self._path)

    def _final_description(self) -> str:
        with self._lock:
            not_recorded = {
                key: self._counters[key] for key in ("dropped_queue_full", "dropped_write_error", "refused")
            }
            not_recorded["write_error"] = self._counters["write_error"]
        facts = dict(
            self._facts,
            finalized=True,
            n_frames=self._pages.pages,
            seq_runs=self._seqs.runs,
            not_recorded=not_recorded,
        )
        return fmt.final_description(facts, self._path.name, self._timestamps, self._metadata_json)

    def __enter__(self) -> FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameRecorder({str(self._path)!r}, {self._shape} {self._dtype})"
