"""Writing the result file while the run runs: :class:`ResultWriter`.

Writing is crash-safe: the file is in SWMR mode while the run is live, a
writer thread batches frames and flushes every ``flush_interval_s``, and after
each flush it rewrites ``/stream/committed`` (frames, spots and gaps that are
complete). A run killed with ``kill -9`` leaves every frame up to its last
flush, readable by :func:`~plstream.analysis.result_file.reader.load_results`.
The datasets written are those of :mod:`plstream.analysis.result_file.layout`.

Examples
--------
>>> with ResultWriter("run.h5", run_info={"settings_json": "{}"}, frame_shape=(512, 512)) as writer:  # doctest: +SKIP
...     writer.append(record)          # one FrameRecord per analyzed frame
...     writer.set_spots(x, y, first)  # the latest spot table
...     writer.set_mean_image(mean)    # the latest (512, 512) mean image
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from plstream import __version__
from plstream.analysis.result_file import _hdf5 as _io
from plstream.analysis.result_file import layout
from plstream.analysis.result_file.errors import ResultFileLocked, ResultWriteError
from plstream.analysis.result_file.layout import FloatArray, FrameRecord, FrameShape, IntArray
from plstream.analysis.result_file.lock import ResultLock, ensure_unlocked

__all__ = ["ResultFileLocked", "ResultWriteError", "ResultWriter", "check_destination"]

logger = logging.getLogger(__name__)

_TRACE_FIELDS = tuple(s.field for s in layout.TRACE_DATASETS)
_OPTIONAL_FIELDS = frozenset({"segmented"})  # FrameRecord fields that may be None (written as fill values)


_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "the file-size limit was reached",
    errno.EDQUOT: "the disk quota is used up",
    errno.EIO: "an I/O error: a failing disk, or a lost network file system?",
    errno.EROFS: "the file system became read-only",
}


def check_destination(path: Path, overwrite: bool, *, check_lock: bool = True) -> None:
    """Raise a clear error if a result file cannot be created at ``path``.

    A file that another live process is writing (it holds ``<path>.lock``)
    is refused even with ``overwrite``: :class:`ResultFileLocked` (``check_lock=False``
    skips this, for the holder of the lock itself).
    """
    if check_lock:
        ensure_unlocked(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name for --out, e.g. {path / 'run.h5'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --out or pass --overwrite")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write results to {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write results to {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write results to {path}: the folder {folder} is not writable; choose another --out"
        )


class ResultWriter:
    """Writes a run's results while it runs; crash-safe (SWMR) and batched.

    ``append`` copies each frame into an in-memory block; a writer thread
    writes blocks as they fill and, every ``flush_interval_s``, writes the
    partial block, the spot table and the gaps, flushes, and then commits
    (``/stream/committed``). Only committed data count after a crash.
    Call ``append``, ``set_spots``, ``set_mean_image``, ``set_gaps`` and
    ``close`` from one thread.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file to create.
    run_info : dict of str to str
        Root attributes written at creation, normally ``settings_json``,
        ``source_json`` and ``camera_json`` (JSON strings; ``"{}"`` when
        missing); other keys (e.g. ``run_uid``) are written as given.
    flush_interval_s : float
        Seconds between flushes: the most a crash can lose.
    overwrite : bool
        Replace an existing file instead of raising FileExistsError.
    on_flush : callable(int), optional
        Called from the writer thread after each commit with the number of
        frames committed (e.g. for progress displays). It must be quick.
    slow_flush_warning_s : float
        A flush (or a wait for the writer) longer than this logs a warning.
    rows_per_block : int
        Frames per in-memory block (one HDF5 write per dataset per block).
    max_buffer_bytes : int
        Memory for blocks waiting for the writer; when it is used up,
        ``append`` blocks until the writer catches up (never drops a frame).
    finalize_timeout_s : float
        How long ``close`` retries to reopen a file that a live reader keeps
        locked before writing the final attributes without locking.
    frame_shape : (int, int), optional
        (rows, columns) of the source's frames, px. Creates ``/images/mean``
        for :meth:`set_mean_image`; without it the file has no image.
    signal_units : str
        The unit of the intensities and backgrounds: ``"photons"`` (a known
        camera) or ``"ADU"``; written into the datasets' ``units`` attributes.
    resume : bool
        Append to the existing, closed file at ``path`` (a resumed analysis):
        its rows stay, the next ``append`` is row ``frames`` of the file, and
        ``run_info`` is added to its ``resumed_json`` list instead of being
        written at the root. The file must hold only committed rows
        (``interrupted``, ``error``, or recovered with ``plstream recover``).

    Raises
    ------
    FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError
        The destination cannot be used; the message says what to do.
    ResultFileLocked
        Another live process is writing (or recovering) this file, even with ``overwrite``.
    ResultWriteError
        HDF5 could not create the file.

    Notes
    -----
    The writer holds ``<path>.lock`` (:class:`~plstream.analysis.result_file.lock.ResultLock`)
    from creation until :meth:`close` has written the final attributes.

    When a write fails (disk full, file-size limit, I/O error), the writer
    thread stops at once and HDF5 writes nothing more to the file (see
    :func:`~plstream.analysis.result_file._hdf5.abandon`): it stays as the last
    commit left it, readable with ``swmr=True`` (``load_results`` does that)
    and by ``plstream recover``, with status ``running`` (final attributes
    are not written to a failing disk). The :class:`ResultWriteError` names the
    file, the dataset, the frame and the reason; the next ``append`` or
    ``close`` raises it, once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run_info: dict[str, str],
        flush_interval_s: float = 1.0,
        overwrite: bool = False,
        on_flush: Callable[[int], None] | None = None,
        slow_flush_warning_s: float = 2.0,
        rows_per_block: int = 256,
        max_buffer_bytes: int = 256 * 2**20,
        finalize_timeout_s: float = 5.0,
        frame_shape: FrameShape | None = None,
        signal_units: str = "photons",
        resume: bool = False,
    ) -> None:
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0 s, got {flush_interval_s}")
        if rows_per_block < 1:
            raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block}")
        self.frame_shape = _checked_frame_shape(frame_shape)
        """(rows, columns) of the mean image, or None when the file has none."""
        self.path = Path(path)
        attrs = _io.creation_attrs(run_info, __version__)
        if not resume:
            check_destination(self.path, overwrite, check_lock=False)  # the folder and --overwrite, said plainly
        self._lock = ResultLock(self.path)
        self._lock.acquire()  # before anything touches the file: a live writer's file is never replaced
        try:
            if resume:
                h5file, held = self._reopen(run_info)
            else:
                h5file, held = self._create(attrs, overwrite, signal_units), None
        except BaseException:
            self._lock.release()
            raise
        self._flush_interval_s = float(flush_interval_s)
        self._on_flush = on_flush
        self._slow_s = float(slow_flush_warning_s)
        self._rows_per_block = int(rows_per_block)
        self._max_buffer_bytes = int(max_buffer_bytes)
        self._finalize_timeout_s = float(finalize_timeout_s)
        # Shared with the writer thread, guarded by _cond.
        self._cond = threading.Condition()
        self._current = _io.FrameBlock(self._rows_per_block, 0)
        self._full: list[_io.FrameBlock] = []
        self._free: list[_io.FrameBlock] = []
        self._n_blocks = 1
        self._pending_spots: _io.SpotTable | None = None
        self._pending_mean: FloatArray | None = None
        self._pending_gaps: list[tuple[int, int]] | None = None
        self._pending_blinking = _io.BlinkingUpdate()
        self._blinking_carry = _io.BlinkingUpdate()  # writer thread: runs waiting for their frames
        self._ensemble: dict[str, Any] = {}
        self._closing = False
        self._error: ResultWriteError | None = None
        # Caller side only.
        self._closed = False
        self._error_delivered = False
        self._next_index = 0
        self._last_spots = 0
        self._table_spots = 0
        # Writer thread only (read by close() after join).
        self._sink = _io.FileSink(h5file, self._before_io)
        self._stats = {"flushes": 0, "max_flush_s": 0.0, "slow_flushes": 0}
        self.frames_committed = 0
        """Frames committed by the last flush (updated by the writer thread)."""
        if held is not None:
            self._sink.resume(held)
            self.frames_committed = self._next_index = held["frames"]
            self._last_spots = self._table_spots = held["spots"]
        self._thread = threading.Thread(target=self._run, name="plstream-result-writer", daemon=True)
        self._thread.start()

    def _reopen(self, run_info: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        if not self.path.is_file():
            raise FileNotFoundError(f"no result file at {self.path} to resume")
        note = {"resumed_utc": _io.utc_now(), "plstream_version": __version__, **run_info}
        try:
            h5file, held = _io.reopen_result_file(self.path, note)
        except (OSError, ValueError) as exc:
            raise ResultWriteError(f"cannot resume {self.path}: {exc}", path=self.path) from exc
        if "/images/mean" in h5file:
            self.frame_shape = _checked_frame_shape(h5file["/images/mean"].shape)
        return h5file, held

    def _create(self, attrs: dict[str, Any], overwrite: bool, signal_units: str) -> Any:
        check_destination(self.path, overwrite, check_lock=False)  # again, now that the lock is ours
        try:
            return _io.create_result_file(
                self.path, attrs, overwrite=overwrite, frame_shape=self.frame_shape, signal_units=signal_units
            )
        except FileExistsError as exc:
            raise FileExistsError(f"{self.path} already exists; choose another --out or pass --overwrite") from exc
        except OSError as exc:
            raise ResultWriteError(f"cannot create the result file {self.path}: {exc}", path=self.path) from exc

    # ------------------------------------------------------------------ caller side
    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close("complete", {})
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted", {"error": "interrupted by the user"})
        else:
            self.close("error", {"error": f"{exc_type.__name__}: {exc}"})

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> bool:
        """The writer thread failed: nothing more is written (the error is raised by ``append`` or ``close``)."""
        return self._error is not None

    @property
    def frames_appended(self) -> int:
        return self._next_index

    def append(self, record: FrameRecord) -> None:
        """Queue one frame; copies its arrays, so the caller may reuse them.

        Blocks (never drops) while the writer is more than
        ``max_buffer_bytes`` behind.

        Raises
        ------
        ValueError
            The record is out of order or its arrays have inconsistent shapes.
        ResultWriteError
            The writer thread failed earlier; nothing more can be written.
        """
        if self._closed:
            raise RuntimeError(f"append() after close() on the result writer for {self.path}")
        self._raise_if_failed()
        n = self._validate(record)
        with self._cond:
            started = time.monotonic()
            warned = False
            # A full current block means the writer is behind and the buffer budget is spent.
            while self._current.full and self._error is None and not self._try_queue_current():
                self._cond.wait(0.25)  # the writer may take the current block meanwhile
                waited = time.monotonic() - started
                if not warned and waited > self._slow_s:
                    warned = True
                    logger.warning(
                        "analysis has waited %.1f s for the result writer of %s (slow disk?)", waited, self.path
                    )
            if self._error is None:
                block = self._current
                block.ensure_spots(n)
                block.add(record, n)
                if block.full:
                    self._try_queue_current()
        self._raise_if_failed()
        self._next_index += 1
        self._last_spots = n

    def set_spots(self, x: FloatArray, y: FloatArray, first_frame: IntArray) -> None:
        """Give the latest spot table (reference-frame px, discovery frame); written at the next flush.

        Spot IDs are indices: the table may only grow, and spot i keeps its ID.
        """
        if self._closed:
            raise RuntimeError(f"set_spots() after close() on the result writer for {self.path}")
        x = np.array(x, dtype=np.float64, copy=True)
        y = np.array(y, dtype=np.float64, copy=True)
        ff = np.array(first_frame, dtype=np.int64, copy=True)
        if x.ndim != 1 or x.shape != y.shape or x.shape != ff.shape:
            raise ValueError(f"set_spots needs three 1-D arrays of one length, got {x.shape}, {y.shape}, {ff.shape}")
        if len(x) < self._table_spots:
            raise ValueError(
                f"the spot table shrank from {self._table_spots} to {len(x)} spots; spot IDs must stay stable"
            )
        self._table_spots = len(x)
        with self._cond:
            self._pending_spots = (x, y, ff)

    def set_mean_image(self, image: FloatArray) -> None:
        """Give the latest drift-corrected mean image; written at the next flush, replacing the last one.

        Parameters
        ----------
        image : (H, W) array
            Photons/px/frame in reference-frame coordinates, shaped like
            ``frame_shape``; copied (stored as float32), so the caller may reuse it.
        """
        if self._closed:
            raise RuntimeError(f"set_mean_image() after close() on the result writer for {self.path}")
        if self.frame_shape is None:
            raise ValueError(
                f"the result writer for {self.path} was created without frame_shape, so the file has no "
                "/images/mean; pass frame_shape=(rows, columns) to ResultWriter"
            )
        mean = np.array(image, dtype=np.float32, copy=True)
        if mean.shape != self.frame_shape:
            raise ValueError(f"the mean image has shape {mean.shape}; expected the frame shape {self.frame_shape}")
        with self._cond:
            self._pending_mean = mean

    def set_gaps(self, gaps: list[tuple[int, int]]) -> None:
        """The source frames missing now: ``(first_missing_seq, last_missing_seq)`` ranges, inclusive, in order.

        Replaces the list written before (a late frame can shrink or split a gap).
        """
        if self._closed:
            raise RuntimeError(f"set_gaps() after close() on the result writer for {self.path}")
        rows = [(int(first), int(last)) for first, last in gaps]
        for first, last in rows:
            if not 0 <= first <= last:
                raise ValueError(f"a gap needs 0 <= first_missing_seq <= last_missing_seq, got [{first}, {last}]")
        with self._cond:
            self._pending_gaps = rows

    def set_blinking(
        self,
        *,
        runs: IntArray | None = None,
        levels: FloatArray | None = None,
        final_frames: IntArray | None = None,
        spot_stats: FloatArray | None = None,
    ) -> None:
        """Give blinking results; written at the next flush.

        Parameters
        ----------
        runs : (R, 4) int array, optional
            Rows ``[spot, first_frame, n_frames, state]``: final refined states written
            over ``/blinking/segmented`` (queued; a run over frames not yet in the
            file waits for them).
        levels : (S, 3) float, optional
            ``/blinking/levels`` (replaces the last one given).
        final_frames : (S,) int, optional
            ``/blinking/final_frames`` (replaces the last one given).
        spot_stats : (S, 21) float, optional
            ``/blinking/spot_stats`` (replaces the last one given).
        """
        if self._closed:
            raise RuntimeError(f"set_blinking() after close() on the result writer for {self.path}")
        update = _io.BlinkingUpdate()
        for name, value, dtype in (
            ("levels", levels, np.float32),
            ("final_frames", final_frames, np.int64),
            ("spot_stats", spot_stats, np.float64),
        ):
            if value is not None:
                update.tables[name] = np.array(value, dtype=dtype, copy=True)
        if runs is not None and len(runs):
            rows = np.array(runs, dtype=np.int64, copy=True).reshape(-1, 4)
            update.runs.append(rows)
        with self._cond:
            self._pending_blinking.merge(update)

    def set_ensemble(self, attrs: dict[str, Any]) -> None:
        """Attributes of ``/blinking/ensemble`` (the ensemble's dwell-time fits), written when the writer closes."""
        if self._closed:
            raise RuntimeError(f"set_ensemble() after close() on the result writer for {self.path}")
        self._ensemble = dict(attrs)

    def close(self, status: str = "complete", summary: dict[str, Any] | None = None, *, status_text: str = "") -> None:
        """Drain, flush, close the SWMR file, then reopen it to write the final attributes; release the lock.

        Idempotent. If the writer thread failed, nothing more is written (the
        file keeps its last commit and status ``running``) and the
        :class:`ResultWriteError` is raised here unless an earlier ``append``
        already raised it.

        Parameters
        ----------
        status : {"complete", "interrupted", "error"}
        summary : dict
            Run counters, stored as ``summary_json``.
        status_text : str
            The status in words with what was lost (root attribute ``status_text``);
            ``status`` itself when empty.
        """
        if self._closed:
            return
        if status not in layout.FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(layout.FINAL_STATUSES)}; got {status!r}")
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        try:
            self._join_writer()
            error = self._error
            if error is not None:
                # Nothing more is written to a file whose writing failed: it stays as its last commit left it.
                if not self._error_delivered:
                    self._error_delivered = True
                    raise error
                return
            attrs = {
                "status": status,
                "status_text": status_text or status,
                "summary_json": json.dumps(dict(summary or {}), default=_io.json_default),
                "frames_analyzed": np.int64(self._sink.frames),
                "closed_utc": _io.utc_now(),
                "writer_json": json.dumps(self._stats),
            }
            try:
                group_attrs = {layout.ENSEMBLE_GROUP: self._ensemble} if self._ensemble else None
                if _io.write_final_attrs(self.path, attrs, timeout_s=self._finalize_timeout_s, group_attrs=group_attrs):
                    logger.warning(
                        "%s was held open by a reader; its final status was written without file locking", self.path
                    )
            except OSError as exc:
                raise ResultWriteError(
                    f"all results are in {self.path}, but its final status could not be written: {exc}; "
                    f"'plstream recover {self.path}' marks it",
                    path=self.path,
                ) from exc
        finally:
            if not self._thread.is_alive():
                self._lock.release()

    def _validate(self, record: FrameRecord) -> int:
        if record.index != self._next_index:
            raise ValueError(
                f"FrameRecord index {record.index} is out of order: expected {self._next_index} "
                "(records are appended for frames 0, 1, 2, ... without holes)"
            )
        n = record.n_spots
        for name in _TRACE_FIELDS:
            if name in _OPTIONAL_FIELDS and getattr(record, name) is None:
                continue
            shape = np.shape(getattr(record, name))
            if shape != (n,):
                raise ValueError(
                    f"FrameRecord {record.index}: {name} has shape {shape}; expected ({n},) like intensity"
                )
        if np.shape(record.drift_xy) != (2,):
            shape = np.shape(record.drift_xy)
            raise ValueError(f"FrameRecord {record.index}: drift_xy has shape {shape}; expected (2,)")
        if np.shape(record.drift_uncertainty) != (3,):
            shape = np.shape(record.drift_uncertainty)
            raise ValueError(f"FrameRecord {record.index}: drift_uncertainty has shape {shape}; expected (3,)")
        if n < self._last_spots:
            raise ValueError(
                f"FrameRecord {record.index} has {n} spots, fewer than the {self._last_spots} before; "
                "spots are never removed"
            )
        return n

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self._error_delivered = True
            raise self._error

    def _take_block(self) -> _io.FrameBlock:
        if self._free:
            return self._free.pop()
        self._n_blocks += 1
        return _io.FrameBlock(self._rows_per_block, self._current.spot_capacity)

    def _try_queue_current(self) -> bool:
        """Hand the full current block to the writer if the buffer budget allows (lock held)."""
        budget = max(3, self._max_buffer_bytes // max(self._current.nbytes, 1))
        if not self._free and self._n_blocks >= budget:
            return False
        self._full.append(self._current)
        self._current = self._take_block()
        self._cond.notify_all()
        return True

    def _join_writer(self) -> None:
        started = time.monotonic()
        while True:
            self._thread.join(timeout=self._slow_s)
            if not self._thread.is_alive():
                return
            waited = time.monotonic() - started
            logger.warning("still waiting for the result writer of %s after %.1f s", self.path, waited)

    # ------------------------------------------------------------------ writer thread
    def _before_io(self, operation: str, dataset: str, frame: int) -> None:
        """Called before every HDF5 write ("write") and flush ("flush") in the writer thread.

        A test seam: subclasses raise ``OSError`` here to simulate a full disk,
        or sleep to simulate a stalled file system.
        """

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # any failure is kept and re-raised to the caller
            # First make sure HDF5 writes nothing more: on a full disk, what it would
            # write now (metadata of a flush that failed) is what breaks the file.
            if not _io.abandon(self._sink.file, keep_alive=(self._sink,)):
                logger.debug("%s stays open until the process ends (HDF5 cannot close it after the error)", self.path)
            error = self._failure(exc)
            logger.debug("the result writer stopped: %s", error, exc_info=exc)
            with self._cond:
                self._error = error
                self._cond.notify_all()

    def _failure(self, exc: Exception) -> ResultWriteError:
        """The error to give the caller for the writer thread's ``exc``: what, where, why, and what is kept."""
        operation, dataset, frame = self._sink.where
        code, words = _io.os_error_of(exc)
        if code is not None:
            why = _WHY.get(code)
            reason = f"[Errno {code}] {words}" + (f" ({why})" if why else "")
        else:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        committed = self.frames_committed
        kept = (
            f"the {committed} frames committed before it (0-{committed - 1}) stay readable"
            if committed
            else "no frame had been committed yet"
        )
        error = ResultWriteError(
            f"writing the result file {self.path} failed at {dataset}, frame {frame} ({operation}): {reason}; "
            f"nothing more was written to it and {kept} ('plstream recover {self.path}' makes a copy "
            "that any HDF5 program opens)",
            path=self.path,
            dataset=dataset,
            frame=frame,
        )
        error.errno = code
        error.__cause__ = exc
        return error

    def _loop(self) -> None:
        # One full block per pass, so a backlog never holds up the commit cadence:
        # every flush_interval_s the frames written so far are committed.
        next_flush = time.monotonic() + self._flush_interval_s
        while True:
            with self._cond:
                while not (self._full or self._closing or time.monotonic() >= next_flush):
                    self._cond.wait(max(0.0, next_flush - time.monotonic()))
                blocks = self._full[:1]
                del self._full[:1]
                drained = not self._full
                final = self._closing and drained
                due = final or time.monotonic() >= next_flush
                if due and drained and self._current.n_rows:
                    blocks.append(self._current)
                    self._current = self._take_block()
                spots, gaps, mean = None, None, None
                if due:
                    spots, gaps, mean = self._pending_spots, self._pending_gaps, self._pending_mean
                    self._pending_spots, self._pending_gaps, self._pending_mean = None, None, None
                    self._blinking_carry.merge(self._pending_blinking)
                    self._pending_blinking = _io.BlinkingUpdate()
            for block in blocks:
                self._sink.write_block(block)
                block.reset()
            if blocks:
                with self._cond:
                    self._free.extend(blocks)
                    self._cond.notify_all()
            if due:
                self._commit(spots, gaps, mean, final=final)
                next_flush = time.monotonic() + self._flush_interval_s
            if final:
                self._sink.file.close()
                return

    def _commit(
        self,
        spots: _io.SpotTable | None,
        gaps: list[tuple[int, int]] | None,
        mean: FloatArray | None,
        *,
        final: bool,
    ) -> None:
        started = time.monotonic()
        self._sink.commit(spots, gaps, mean, final=final, blinking=self._blinking_carry)
        took = time.monotonic() - started
        self._stats["flushes"] += 1
        self._stats["max_flush_s"] = max(self._stats["max_flush_s"], round(took, 4))
        if took > self._slow_s:
            self._stats["slow_flushes"] += 1
            logger.warning("flushing %s took %.1f s (slow or network file system?)", self.path, took)
        self.frames_committed = self._sink.frames
        if self._on_flush is not None:
            try:
                self._on_flush(self.frames_committed)
            except Exception:
                logger.exception("the on_flush callback of the result writer failed")


def _checked_frame_shape(frame_shape: Any) -> FrameShape | None:
    """``frame_shape`` as a tuple of two positive ints, or None; ValueError naming the problem."""
    if frame_shape is None:
        return None
    try:
        rows, cols = (int(n) for n in frame_shape)
    except (TypeError, ValueError):
        raise ValueError(f"frame_shape must be (rows, columns), got {frame_shape!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"frame_shape must be two positive pixel counts (rows, columns), got {frame_shape!r}")
    return rows, cols
