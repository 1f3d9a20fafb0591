"""Low-level HDF5 operations of the result file: create, batch, write, commit, finalize.

Private to :mod:`plstream.analysis.result_file.writer` (the public writer) and
:mod:`plstream.analysis.result_file.reader` (the readers). What the datasets
are (paths, dtypes, axes, fill values, chunk shapes) is the table in
:mod:`plstream.analysis.result_file.layout`; this module only applies it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5s

from plstream.analysis.result_file.layout import (
    BLINKING_SPOT_DATASETS,
    CHUNK_CACHE_BYTES,
    CHUNK_CACHE_SLOTS,
    COMMIT_DTYPE,
    COMMIT_PATH,
    DATASETS,
    ENSEMBLE_GROUP,
    FRAME_DATASETS,
    GAP_DATASET,
    LAYOUT_VERSION,
    MEAN_IMAGE_DATASET,
    RESERVED_ATTRS,
    ROTATION_PATH,
    RUN_INFO_JSON,
    SPOT_DATASETS,
    TRACE_DATASETS,
    DatasetSpec,
    FloatArray,
    FrameShape,
    rotation_center_xy,
)

logger = logging.getLogger(__name__)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a ``Z``, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def file_access(**kwargs: Any) -> dict[str, Any]:
    """``h5py.File`` keyword arguments: the chunk cache size, plus ``kwargs``."""
    return {"rdcc_nbytes": CHUNK_CACHE_BYTES, "rdcc_nslots": CHUNK_CACHE_SLOTS, **kwargs}


def create_result_file(
    path: Path,
    attrs: dict[str, Any],
    *,
    overwrite: bool,
    frame_shape: FrameShape | None = None,
    signal_units: str = "photons",
) -> h5py.File:
    """Create every group, dataset and attribute, then switch to SWMR mode.

    The (H, W) image datasets are created only when ``frame_shape`` is given.
    ``signal_units`` replaces "photons" in the datasets' ``units`` (``"ADU"``
    for a run whose camera gain is unknown). Nothing may be created after
    this returns (SWMR forbids new objects).
    """
    f = h5py.File(path, "w" if overwrite else "x", libver="latest", **file_access())
    try:
        for spec in DATASETS:
            if spec.is_image and frame_shape is None:
                continue
            shape, maxshape, chunks = spec.storage(frame_shape)
            d = f.create_dataset(
                spec.path, shape=shape, maxshape=maxshape, dtype=spec.dtype, chunks=chunks, fillvalue=spec.fill
            )
            d.attrs["units"] = spec.units.replace("photons", signal_units)
            d.attrs["description"] = spec.description
            if spec.columns:
                d.attrs["columns"] = ",".join(spec.columns)
            if spec.path == ROTATION_PATH:
                centre = rotation_center_xy(frame_shape) if frame_shape is not None else (np.nan, np.nan)
                d.attrs["center_xy"] = np.asarray(centre, dtype=np.float64)
        # The ensemble's dwell-time fits go into this group's attributes when the writer closes.
        f.require_group(ENSEMBLE_GROUP).attrs["description"] = "ensemble dwell-time fits (attributes, written at close)"
        # Written now so its storage is allocated before SWMR (no allocation later).
        d = f.create_dataset(COMMIT_PATH, data=np.zeros((), dtype=COMMIT_DTYPE))
        d.attrs["units"] = "frames, spots and gaps committed; flush time in s since the Unix epoch; 1 = writer closed"
        d.attrs["description"] = "what a reader may trust: rows and columns up to these counts are complete"
        for key, value in attrs.items():
            f.attrs[key] = value
        f.flush()
        f.swmr_mode = True
    except BaseException:
        f.close()
        path.unlink(missing_ok=True)
        raise
    return f


_FINAL_ATTRS = ("summary_json", "frames_analyzed", "closed_utc", "status_text", "writer_json")


def reopen_result_file(path: Path, note: dict[str, Any]) -> tuple[h5py.File, dict[str, Any]]:
    """Reopen a closed result file to append to it (a resumed analysis), in SWMR mode again.

    The file must be closed (not live, not crashed: ``plstream recover`` first)
    and hold exactly what its commit record counts. Its final attributes are
    removed (it is running again), ``status`` becomes ``running``, and ``note``
    is appended to the list in ``resumed_json``. Returns the file and what it
    holds: ``frames``, ``spots``, ``gaps``, ``gap_rows`` (the gap dataset's
    length) and the spot table ``table`` (x, y, first_frame).
    """
    try:
        f = h5py.File(path, "r+", libver="latest", **file_access())
    except OSError as exc:
        raise OSError(
            f"{path} cannot be reopened to resume it ({exc}); if its writer crashed, run 'plstream recover {path}'"
        ) from exc
    try:
        if int(f.attrs.get("layout_version", 0)) != LAYOUT_VERSION:
            version = f.attrs.get("layout_version")
            raise ValueError(f"{path} has layout version {version}; only version {LAYOUT_VERSION} can be resumed")
        commit = f[COMMIT_PATH][()]
        frames, spots, gaps = int(commit["frames"]), int(commit["spots"]), int(commit["gaps"])
        extents = {spec.path: f[spec.path].shape for spec in FRAME_DATASETS if spec.path in f}
        if any(shape[0] != frames for shape in extents.values()):
            raise ValueError(f"{path} holds rows its commit record does not count; run 'plstream recover' first")
        resumed = json.loads(f.attrs.get("resumed_json", "[]") or "[]")
        f.attrs["resumed_json"] = json.dumps([*resumed, note], default=json_default)
        f.attrs["status"] = "running"
        for key in _FINAL_ATTRS:
            if key in f.attrs:
                del f.attrs[key]
        f[COMMIT_PATH][()] = commit_record(frames, spots, gaps, writer_closed=False)
        table = tuple(np.asarray(f[spec.path][:spots]) for spec in SPOT_DATASETS)
        state = {"frames": frames, "spots": spots, "gaps": gaps, "gap_rows": f[GAP_DATASET.path].shape[0]}
        state["table"] = table
        f.flush()
        f.swmr_mode = True
    except BaseException:
        f.close()
        raise
    return f, state


def creation_attrs(run_info: dict[str, str], plstream_version: str) -> dict[str, Any]:
    """The root attributes written at creation; checks the caller's ``run_info``."""
    attrs: dict[str, Any] = {
        "layout_version": np.int64(LAYOUT_VERSION),
        "plstream_version": plstream_version,
        "created_utc": utc_now(),
        "status": "running",
    }
    attrs.update(dict.fromkeys(RUN_INFO_JSON, "{}"))
    for key, value in run_info.items():
        if key in RESERVED_ATTRS:
            raise ValueError(f"run_info may not set {key!r}: the writer owns that attribute")
        if not isinstance(value, str):
            raise TypeError(f"run_info[{key!r}] must be a str (JSON text), got {type(value).__name__}")
        if key.endswith("_json"):
            try:
                json.loads(value)
            except ValueError as exc:
                raise ValueError(f"run_info[{key!r}] is not valid JSON: {exc}") from exc
        attrs[key] = value
    return attrs


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays as Python values, the rest as str."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def commit_record(frames: int, spots: int, gaps: int, *, writer_closed: bool) -> np.ndarray:
    """A commit record stamped with the current time."""
    rec = np.zeros((), dtype=COMMIT_DTYPE)
    rec["frames"], rec["spots"], rec["gaps"] = frames, spots, gaps
    rec["flush_unix_s"] = time.time()
    rec["writer_closed"] = int(writer_closed)
    return rec


def is_lock_error(exc: OSError) -> bool:
    """The error of opening a file that another process holds locked."""
    return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(exc)


_HDF5_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")


def os_error_of(exc: BaseException) -> tuple[int | None, str]:
    """The operating system's errno and words behind an h5py error, e.g. ``(28, "No space left on device")``.

    HDF5 reports a failed ``write()`` inside a RuntimeError's text ("errno =
    28, error message = ..."); an OSError carries it as ``errno``. ``(None, "")``
    when the error did not come from the operating system.
    """
    found = _HDF5_ERRNO.search(str(exc))
    if found:
        return int(found.group(1)), found.group(2)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno, exc.strerror or os.strerror(exc.errno)
    return None, ""


def abandon(f: h5py.File, keep_alive: tuple[Any, ...] = ()) -> bool:
    """Close a result file after a failed write without letting HDF5 write one more byte to it.

    After a write error HDF5's state no longer matches the disk: closing the
    file normally makes HDF5 flush its remaining metadata, which on a full disk
    (or past a file-size limit) half succeeds, breaks the file ("wrong fractal
    heap header signature") and then crashes the process at exit (a failed
    ``H5Fclose`` leaves the library inconsistent; measured with h5py 3.16 /
    HDF5 2.0). So HDF5's file descriptor is first pointed at the null device:
    every later write goes nowhere and succeeds, and the file on disk stays
    exactly as the failure left it. In SWMR mode that is a valid file holding
    everything up to the last commit, like after ``kill -9``.

    A failure in the middle of a metadata flush leaves HDF5 unable to close
    the file at all ("slist already enabled?"), and closing the file's
    objects later then crashes. The file and ``keep_alive`` (objects holding
    its dataset ids) are then never freed: they stay open, harmlessly (every
    write goes to the null device), until the process ends.

    Returns True when the file was closed.
    """
    name = f.filename  # never ask a file that failed to close: HDF5 crashes then
    try:
        handle = f.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError) as exc:
        handle = None
        logger.debug("no file descriptor for %s: %s", name, exc)
    if isinstance(handle, int) and handle >= 0:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, handle)
        finally:
            os.close(null)
        try:
            f.close()
            return True
        except (OSError, RuntimeError) as exc:
            logger.debug("HDF5 cannot close %s after the write error: %s", name, exc)
    _never_free(f, *keep_alive)
    return False


def _never_free(*objects: Any) -> None:
    """Keep ``objects`` alive until the process ends: freeing them would make HDF5 close them, and crash."""
    import ctypes

    for obj in objects:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def write_final_attrs(
    path: Path, attrs: dict[str, Any], *, timeout_s: float, group_attrs: dict[str, dict[str, Any]] | None = None
) -> bool:
    """Reopen the closed file normally and write ``attrs`` at the root (and ``group_attrs`` on existing groups).

    A live reader (``swmr=True``) holds a shared lock that refuses this
    reopen; it is retried for ``timeout_s``, then done without locking (the
    data are no longer changing). Returns True when locking had to be skipped.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            f = h5py.File(path, "r+")
            unlocked = False
            break
        except OSError as exc:
            if not is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                f = h5py.File(path, "r+", locking=False)
                unlocked = True
                break
            time.sleep(0.05)
    with f:
        for group, values in (group_attrs or {}).items():
            if group in f:
                for key, value in values.items():
                    f[group].attrs[key] = value
        for key, value in attrs.items():
            f.attrs[key] = value
    return unlocked


# ---------------------------------------------------------------------- batching
class FrameBlock:
    """Rows of consecutive frames on their way to the writer thread.

    One preallocated array per per-frame dataset, ``(rows, ...)``; the per-spot
    ones are ``(rows, spot_capacity)`` and hold the dataset's fill value
    wherever a frame had fewer spots, so a block is written as one rectangle.

    Parameters
    ----------
    rows : int
        Frames per block.
    spots : int
        Initial spot capacity (grows by doubling).
    """

    def __init__(self, rows: int, spots: int) -> None:
        self.capacity = rows
        self.spot_capacity = 0
        self.arrays: dict[str, np.ndarray] = {}
        for spec in FRAME_DATASETS:
            if not spec.per_spot:
                shape = (rows, *(int(a) for a in spec.axes[1:]))
                self.arrays[spec.field] = np.full(shape, spec.fill, dtype=spec.dtype)
        self.n_spots = np.zeros(rows, dtype=np.int64)
        self.n_rows = 0
        self.first_index = 0
        self.max_spots = 0
        self.ensure_spots(max(spots, 1))  # the per-spot arrays must exist even if the first frames have none

    @property
    def full(self) -> bool:
        return self.n_rows == self.capacity

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def ensure_spots(self, n: int) -> None:
        """Grow the per-spot arrays to hold at least ``n`` spots, keeping the rows."""
        if n <= self.spot_capacity:
            return
        capacity = max(n, 2 * self.spot_capacity, 64)
        for spec in TRACE_DATASETS:
            grown = np.full((self.capacity, capacity), spec.fill, dtype=spec.dtype)
            old = self.arrays.get(spec.field)
            if old is not None and self.n_rows:
                grown[: self.n_rows, : self.spot_capacity] = old[: self.n_rows]
            self.arrays[spec.field] = grown
        self.spot_capacity = capacity

    def add(self, record: Any, n_spots: int) -> None:
        """Copy one validated record (with ``n_spots`` spots) into the next row."""
        r = self.n_rows
        if r == 0:
            self.first_index = record.index
        a = self.arrays
        for spec in TRACE_DATASETS:
            value = getattr(record, spec.field)
            if value is not None:  # None (an optional field): the fill value stays
                a[spec.field][r, :n_spots] = value
        for spec in FRAME_DATASETS:
            if not spec.per_spot:
                a[spec.field][r] = getattr(record, spec.field)
        self.n_spots[r] = n_spots
        self.max_spots = max(self.max_spots, n_spots)
        self.n_rows = r + 1

    def reset(self) -> None:
        """Empty the block, restoring fill values where rows were written."""
        for spec in TRACE_DATASETS:
            self.arrays[spec.field][: self.n_rows, : self.max_spots] = spec.fill
        self.n_rows = 0
        self.max_spots = 0


class BlinkingUpdate:
    """Blinking results waiting for the writer thread: per-spot tables (latest wins) and state runs (queued).

    ``runs`` rows ``[spot, first_frame, n_frames, state]`` rewrite
    ``/blinking/segmented``; a run over frames not yet in the file waits for them.
    """

    def __init__(self) -> None:
        self.tables: dict[str, np.ndarray] = {}
        self.runs: list[np.ndarray] = []

    def merge(self, newer: BlinkingUpdate) -> None:
        self.tables.update(newer.tables)
        self.runs.extend(newer.runs)


SEGMENTED_PATH = "/blinking/segmented"

SpotTable = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(x px float64, y px float64, first_frame int64), each (S,)."""


class FileSink:
    """The writer thread's side of an open SWMR result file.

    Writes blocks of frames, the spot table, gaps and the mean image, and commits. Used by one
    thread only. :attr:`where` names the operation, the dataset and the first
    frame of what is being written (for error messages). Uses h5py's low-level calls (``set_extent``,
    hyperslab ``write``): 3-6x less overhead per call than slicing syntax.

    Parameters
    ----------
    f : h5py.File
        As returned by :func:`create_result_file`.
    before_io : callable(operation, dataset, frame)
        Called before every write and flush (a fault-injection seam).
    """

    def __init__(self, f: h5py.File, before_io: Any) -> None:
        self.file = f
        self._before_io = before_io
        self._ids = {spec.path: f[spec.path].id for spec in DATASETS if spec.path in f}
        self._commit_id = f[COMMIT_PATH].id
        self.frames = 0
        self.spots = 0
        self.gaps = 0
        self.committed = 0  # frames vouched for by the last commit record
        self._gap_rows = 0  # the dataset's length: the most gaps ever written
        self.where = ("open", "(file)", -1)
        self._inferred_first: list[int] = []
        self._table: SpotTable = (np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
        self._table_dirty = False
        self._spot_table_len = 0

    def resume(self, state: dict[str, Any]) -> None:
        """Continue after what a reopened file holds (``state`` from :func:`reopen_result_file`)."""
        self.frames = self.committed = int(state["frames"])
        self.spots = self._spot_table_len = int(state["spots"])
        self.gaps, self._gap_rows = int(state["gaps"]), int(state["gap_rows"])
        x, y, first = state["table"]
        self._table = (np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(first, np.int64))
        self._inferred_first = [int(v) for v in first]

    def _at(self, operation: str, dataset: str, frame: int) -> None:
        self.where = (operation, dataset, frame)
        self._before_io(operation, dataset, frame)

    def _write(self, path: str, source: np.ndarray, count: tuple[int, ...], start: tuple[int, ...]) -> None:
        """Write ``source[:count[0], :count[1]...]`` at ``start`` in the dataset (already big enough)."""
        if 0 in count:
            return
        dsid = self._ids[path]
        mspace = h5s.create_simple(source.shape)
        mspace.select_hyperslab((0,) * source.ndim, count)
        fspace = dsid.get_space()
        fspace.select_hyperslab(start, count)
        dsid.write(mspace, fspace, np.ascontiguousarray(source))

    def _extent(self, spec: DatasetSpec, frames: int) -> tuple[int, ...]:
        return tuple(frames if a == "T" else self.spots if a == "S" else int(a) for a in spec.axes)

    def _grow_spots(self, s_new: int) -> None:
        if s_new <= self.spots:
            return
        self.spots = s_new
        for spec in TRACE_DATASETS:
            self._at("resize", spec.path, self.frames)
            self._ids[spec.path].set_extent(self._extent(spec, self.frames))
        for spec in BLINKING_SPOT_DATASETS:  # kept as long as the spot table (fill values until written)
            if spec.path in self._ids:
                self._at("resize", spec.path, self.frames)
                self._ids[spec.path].set_extent(self._extent(spec, self.frames))

    def write_block(self, block: FrameBlock) -> None:
        """Extend the per-frame datasets and write the block's rows (no flush)."""
        n, t0 = block.n_rows, block.first_index
        if t0 != self.frames:
            raise RuntimeError(f"internal error: block starts at frame {t0}, file has {self.frames}")
        for row in range(n):  # a spot's first frame, as seen in the records
            while len(self._inferred_first) < block.n_spots[row]:
                self._inferred_first.append(t0 + row)
        self._grow_spots(block.max_spots)
        t1, s = t0 + n, block.max_spots
        for spec in FRAME_DATASETS:
            self._at("write", spec.path, t0)
            self._ids[spec.path].set_extent(self._extent(spec, t1))
            source = block.arrays[spec.field]
            if spec.per_spot:
                self._write(spec.path, source, (n, s), (t0, 0))
            else:
                self._write(spec.path, source, (n, *source.shape[1:]), (t0, *(0 for _ in source.shape[1:])))
        self.frames = t1

    def _write_blinking(self, update: BlinkingUpdate, t: int) -> None:
        """Per-spot blinking tables (up to the committed spots) and the runs of final states over written frames."""
        s = self.spots
        for spec in BLINKING_SPOT_DATASETS:
            table = update.tables.pop(spec.field, None)
            if table is None or spec.path not in self._ids:
                continue
            rows = min(len(table), s)
            self._at("write", spec.path, t)
            source = np.ascontiguousarray(table[:rows], dtype=spec.dtype)
            self._write(spec.path, source, source.shape, (0,) * source.ndim)
        if not update.runs:
            return
        runs = np.concatenate(update.runs)
        update.runs = []
        runs = runs[np.lexsort((runs[:, 1], runs[:, 0]))]
        waiting = []
        self._at("write", SEGMENTED_PATH, t)
        k = 0
        while k < len(runs):
            # one write per spot and stretch of touching runs over frames already in the file
            spot, first = int(runs[k, 0]), int(runs[k, 1])
            if spot >= s or first >= self.frames:
                waiting.append(runs[k])
                k += 1
                continue
            pieces = []
            stop = first
            while k < len(runs) and int(runs[k, 0]) == spot and int(runs[k, 1]) == stop and stop < self.frames:
                count = int(runs[k, 2])
                end = min(stop + count, self.frames)
                pieces.append(np.full(end - stop, runs[k, 3], dtype=np.int8))
                if stop + count > end:
                    waiting.append(np.array([spot, end, stop + count - end, runs[k, 3]], dtype=np.int64))
                stop += count
                k += 1
            column = np.concatenate(pieces)[:, None]
            self._write(SEGMENTED_PATH, column, column.shape, (first, spot))
        if waiting:
            update.runs.append(np.asarray(waiting, dtype=np.int64).reshape(-1, 4))

    def commit(
        self,
        spots: SpotTable | None,
        gaps: list[tuple[int, int]] | None,
        mean_image: FloatArray | None = None,
        *,
        final: bool,
        blinking: BlinkingUpdate | None = None,
    ) -> None:
        """Write the spot table, gaps, mean image and blinking results, flush, then write and flush the commit record.

        Spots the caller's table does not cover yet (seen only in records)
        get NaN positions and the frame where they first appeared. ``gaps``
        (None: unchanged) replaces the whole gap list; the dataset never
        shrinks (SWMR), rows past the committed count hold the fill value.
        ``mean_image`` ((H, W) float32, or None to keep the last one) needs a
        file created with a frame shape.
        """
        t = self.frames
        if spots is not None:
            self._table, self._table_dirty = spots, True
        self._grow_spots(len(self._table[0]))
        s = self.spots
        if self._table_dirty or self._spot_table_len < s:
            x, y = np.full(s, np.nan), np.full(s, np.nan)
            ff = np.full(s, -1, dtype=np.int64)
            inferred = self._inferred_first[:s]
            ff[: len(inferred)] = inferred
            k = len(self._table[0])
            x[:k], y[:k], ff[:k] = self._table
            for spec, values in zip(SPOT_DATASETS, (x, y, ff)):
                self._at("write", spec.path, t)
                self._ids[spec.path].set_extent((s,))
                self._write(spec.path, values, (s,), (0,))
            self._table_dirty, self._spot_table_len = False, s
        if gaps is not None:
            self._at("write", GAP_DATASET.path, t)
            rows = np.asarray(gaps, dtype=np.int64).reshape(-1, 2)
            extent = max(len(rows), self._gap_rows)
            if extent > self._gap_rows:
                self._ids[GAP_DATASET.path].set_extent((extent, 2))
                self._gap_rows = extent
            if extent:
                table = np.full((extent, 2), GAP_DATASET.fill, dtype=np.int64)
                table[: len(rows)] = rows
                self._write(GAP_DATASET.path, table, table.shape, (0, 0))
            self.gaps = len(rows)
        if mean_image is not None:
            path = MEAN_IMAGE_DATASET.path
            self._at("write", path, t)
            self._write(path, mean_image, mean_image.shape, (0, 0))
        if blinking is not None:
            self._write_blinking(blinking, t)
        first = self.committed
        for path, dsid in self._ids.items():  # one dataset at a time, so an error names the one that failed
            self._at("flush", path, first)
            dsid.flush()
        self._at("flush", "(file metadata)", first)
        self.file.flush()  # the data first ...
        self._at("write", COMMIT_PATH, first)
        record = commit_record(t, s, self.gaps, writer_closed=final)
        self._commit_id.write(h5s.ALL, h5s.ALL, record)
        self._at("flush", COMMIT_PATH, first)
        self.file.flush()  # ... then the record that vouches for them
        self.committed = t
