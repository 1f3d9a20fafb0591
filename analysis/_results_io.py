"""The HDF5 result layout (one table of datasets) and the low-level writing operations.

Private to :mod:`plstream.analysis.results` (the public writer) and
:mod:`plstream.analysis.result_reader` (the readers). Everything that knows a
dataset's path, dtype, shape, fill value or chunk shape lives here, in
:data:`DATASETS`, so the writer, the reader and the documentation test all
read the same table.

Axis letters in :attr:`DatasetSpec.axes`: ``T`` frames analyzed, ``S`` spots,
``G`` gaps (these three grow), ``H`` and ``W`` the frame's rows and columns
(fixed when the file is created), a digit a fixed length.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5s

LAYOUT_VERSION = 1
"""Version of the result layout this code writes and the newest it reads (history: ``docs/result_layout.md``)."""
OLDEST_LAYOUT_VERSION = 1
"""The oldest layout version this code reads."""

FloatArray = np.ndarray
"""float32 or float64 array (dtype as stated per field)."""
IntArray = np.ndarray
"""int8 or int64 array (dtype as stated per field)."""
FrameShape = tuple[int, int]
"""(rows, columns) of the source's frames, px."""
_Storage = tuple[tuple[int, ...], tuple[Any, ...], tuple[int, ...]]

COMMIT_PATH = "/stream/committed"
COMMIT_DTYPE = np.dtype(
    [
        ("frames", "<i8"),
        ("spots", "<i8"),
        ("gaps", "<i8"),
        ("flush_unix_s", "<f8"),
        ("writer_closed", "i1"),
    ]
)
"""The commit record, rewritten after every flush: what a reader may trust."""

#: Root attributes the writer owns; run_info may not use these names.
RESERVED_ATTRS = frozenset(
    {
        "layout_version",
        "plstream_version",
        "created_utc",
        "status",
        "summary_json",
        "frames_analyzed",
        "closed_utc",
        "writer_json",
    }
)
#: JSON attributes written at creation; "{}" when the caller gives none.
RUN_INFO_JSON = ("settings_json", "source_json", "camera_json")
FINAL_STATUSES = ("complete", "interrupted", "error")

# Chunk shapes: ~64-128 KiB per (T, S) chunk (256 frames x 64 spots), so a
# 1e6-frame x 5000-spot run has ~3e5 chunks and one spot's whole trace is
# ~3900 chunk reads; 1-D chunks of 4096 rows (32 KiB of int64).
_CHUNK_T2D, _CHUNK_S2D = 256, 64
_CHUNK_1D = 4096
_CHUNK_SPOTS = 1024
_CHUNK_GAPS = 256
_CHUNK_IMAGE = 256  # (H, W) images in tiles of at most 256 x 256 (256 KiB of float32)
# Per-dataset chunk cache: one block of 256 frames x 5000 spots of float64
# spans at most 2 x 79 chunks of 128 KiB (~20 MiB); partial chunks stay cached.
CHUNK_CACHE_BYTES = 32 * 2**20
CHUNK_CACHE_SLOTS = 10007


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the layout.

    Attributes
    ----------
    path : str
        Absolute path in the file, e.g. ``/traces/intensity``.
    dtype : numpy.dtype
    axes : tuple of str
        ``T``, ``S``, ``G`` (growing), ``H``, ``W`` (the frame shape) or a
        fixed length as a digit string.
    fill : float or int
        The HDF5 fill value: what a reader sees where nothing was written.
    units : str
        Stored as the dataset's ``units`` attribute ("1" = dimensionless).
    field : str
        Attribute name on :class:`~plstream.analysis.results.Results`, and on
        :class:`~plstream.analysis.results.FrameRecord` for per-frame data.
    description : str
        Stored as the dataset's ``description`` attribute.
    """

    path: str
    dtype: np.dtype
    axes: tuple[str, ...]
    fill: float | int
    units: str
    field: str
    description: str

    @property
    def per_frame(self) -> bool:
        return self.axes[0] == "T"

    @property
    def per_spot(self) -> bool:
        return "S" in self.axes

    @property
    def is_image(self) -> bool:
        """An (H, W) image: written only when the writer knows the frame shape (plstream >= 0.2)."""
        return self.axes == ("H", "W")

    def storage(self, frame_shape: FrameShape | None = None) -> _Storage:
        """(initial shape, maximum shape (None = unlimited), chunk shape); images need ``frame_shape``."""
        if self.is_image:
            if frame_shape is None:
                raise ValueError(f"{self.path} is an (H, W) image: its size needs the frame shape")
            rows, cols = frame_shape
            return (rows, cols), (rows, cols), (min(rows, _CHUNK_IMAGE), min(cols, _CHUNK_IMAGE))
        shape = tuple(0 if a in "TSG" else int(a) for a in self.axes)
        maxshape = tuple(None if a in "TSG" else int(a) for a in self.axes)
        if self.axes == ("T", "S"):
            return shape, maxshape, (_CHUNK_T2D, _CHUNK_S2D)
        first = {"T": _CHUNK_1D, "S": _CHUNK_SPOTS, "G": _CHUNK_GAPS}[self.axes[0]]
        return shape, maxshape, (first, *(int(a) for a in self.axes[1:]))


def _spec(path: str, dtype: str, axes: str, fill: float | int, units: str, field: str, description: str) -> DatasetSpec:
    return DatasetSpec(path, np.dtype(dtype), tuple(axes.split(",")), fill, units, field, description)


_NAN = float("nan")
DATASETS: tuple[DatasetSpec, ...] = (
    _spec("/spots/x", "<f8", "S", _NAN, "px", "spots_x", "reference-frame x (column) of each spot"),
    _spec("/spots/y", "<f8", "S", _NAN, "px", "spots_y", "reference-frame y (row) of each spot"),
    _spec("/spots/first_frame", "<i8", "S", -1, "frame", "spots_first_frame", "frame where the spot was discovered"),
    _spec("/drift/xy", "<f8", "T,2", _NAN, "px", "drift_xy", "[dx, dy]: position in frame t minus reference position"),
    _spec("/traces/intensity", "<f4", "T,S", _NAN, "photons", "intensity", "background-subtracted aperture intensity"),
    _spec("/traces/background", "<f4", "T,S", _NAN, "photons/px", "background", "local background"),
    _spec("/traces/weighted", "<f4", "T,S", _NAN, "photons", "weighted", "PSF-weighted intensity estimate"),
    _spec("/fits/x", "<f8", "T,S", _NAN, "px", "fit_x", "fitted centre x in frame t's own pixel coordinates"),
    _spec("/fits/y", "<f8", "T,S", _NAN, "px", "fit_y", "fitted centre y in frame t's own pixel coordinates"),
    _spec("/fits/amplitude", "<f4", "T,S", _NAN, "photons", "fit_amplitude", "integral of the fitted Gaussian"),
    _spec("/fits/sigma", "<f4", "T,S", _NAN, "px", "fit_sigma", "fitted Gaussian sigma"),
    _spec("/fits/background", "<f4", "T,S", _NAN, "photons/px", "fit_background", "fitted background"),
    _spec("/fits/uncertainty", "<f4", "T,S", _NAN, "px", "fit_uncertainty", "localization standard error (CRLB)"),
    _spec("/fits/success", "i1", "T,S", 0, "1", "fit_success", "1 = successful fit, 0 = failed or not fitted"),
    _spec("/blinking/state", "i1", "T,S", -1, "1", "state", "1 on, 0 off, -1 not measured"),
    _spec("/frames/seq", "<i8", "T", -1, "1", "seq", "source sequence number of the frame"),
    _spec("/frames/timestamp", "<f8", "T", _NAN, "s", "timestamp", "source timestamp of the frame"),
    _spec("/stream/gaps", "<i8", "G,2", -1, "1", "gaps", "[first_missing_seq, last_missing_seq] per gap"),
    # Added in plstream 0.2 (still layout 1: a new name; older files lack it):
    _spec(
        "/images/mean",
        "<f4",
        "H,W",
        _NAN,
        "photons/px/frame",
        "mean_image",
        "drift-corrected mean image in reference-frame coordinates (rewritten at each flush)",
    ),
)
FRAME_DATASETS = tuple(s for s in DATASETS if s.per_frame)
TRACE_DATASETS = tuple(s for s in FRAME_DATASETS if s.per_spot)
SPOT_DATASETS = tuple(s for s in DATASETS if s.axes == ("S",))
GAP_DATASET = next(s for s in DATASETS if s.axes[0] == "G")
MEAN_IMAGE_DATASET = next(s for s in DATASETS if s.field == "mean_image")
#: Datasets every result file has; the images exist only in files whose writer knew the frame shape.
REQUIRED_DATASETS = tuple(s for s in DATASETS if not s.is_image)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a ``Z``, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def file_access(**kwargs: Any) -> dict[str, Any]:
    """``h5py.File`` keyword arguments: the chunk cache size, plus ``kwargs``."""
    return {"rdcc_nbytes": CHUNK_CACHE_BYTES, "rdcc_nslots": CHUNK_CACHE_SLOTS, **kwargs}


def create_result_file(
    path: Path, attrs: dict[str, Any], *, overwrite: bool, frame_shape: FrameShape | None = None
) -> h5py.File:
    """Create every group, dataset and attribute, then switch to SWMR mode.

    The (H, W) image datasets are created only when ``frame_shape`` is given.
    Nothing may be created after this returns (SWMR forbids new objects).
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
            d.attrs["units"] = spec.units
            d.attrs["description"] = spec.description
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


def creation_attrs(run_info: dict[str, str], plstream_version: str) -> dict[str, Any]:
    """The root attributes written at creation; checks the caller's ``run_info``."""
    attrs: dict[str, Any] = {
        "layout_version": np.int64(LAYOUT_VERSION),
        "plstream_version": plstream_version,
        "created_utc": utc_now(),
        "status": "running",
    }
    attrs.update({key: "{}" for key in RUN_INFO_JSON})
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


def check_destination(path: Path, overwrite: bool) -> None:
    """Raise a clear error if a result file cannot be created at ``path``."""
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


def write_final_attrs(path: Path, attrs: dict[str, Any], *, timeout_s: float) -> bool:
    """Reopen the closed file normally and write ``attrs`` at the root.

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
            a[spec.field][r, :n_spots] = getattr(record, spec.field)
        a["drift_xy"][r] = record.drift_xy
        a["seq"][r] = record.seq
        a["timestamp"][r] = record.timestamp
        self.n_spots[r] = n_spots
        self.max_spots = max(self.max_spots, n_spots)
        self.n_rows = r + 1

    def reset(self) -> None:
        """Empty the block, restoring fill values where rows were written."""
        for spec in TRACE_DATASETS:
            self.arrays[spec.field][: self.n_rows, : self.max_spots] = spec.fill
        self.n_rows = 0
        self.max_spots = 0


SpotTable = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(x px float64, y px float64, first_frame int64), each (S,)."""


class FileSink:
    """The writer thread's side of an open SWMR result file.

    Writes blocks of frames, the spot table, gaps and the mean image, and commits. Used by one
    thread only. :attr:`where` names the dataset and frame of the operation in
    progress, for error messages. Uses h5py's low-level calls (``set_extent``,
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
        self.where = ("(file)", -1)
        self._inferred_first: list[int] = []
        self._table: SpotTable = (np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
        self._table_dirty = False
        self._spot_table_len = 0

    def _at(self, operation: str, dataset: str, frame: int) -> None:
        self.where = (dataset, frame)
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

    def commit(
        self,
        spots: SpotTable | None,
        gaps: list[tuple[int, int]],
        mean_image: FloatArray | None = None,
        *,
        final: bool,
    ) -> None:
        """Write the spot table, gaps and mean image, flush, then write and flush the commit record.

        Spots the caller's table does not cover yet (seen only in records)
        get NaN positions and the frame where they first appeared.
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
        if gaps:
            self._at("write", GAP_DATASET.path, t)
            rows = np.asarray(gaps, dtype=np.int64)
            self._ids[GAP_DATASET.path].set_extent((self.gaps + len(rows), 2))
            self._write(GAP_DATASET.path, rows, rows.shape, (self.gaps, 0))
            self.gaps += len(rows)
        if mean_image is not None:
            path = MEAN_IMAGE_DATASET.path
            self._at("write", path, t)
            self._write(path, mean_image, mean_image.shape, (0, 0))
        self._at("flush", "(flush)", t)
        self.file.flush()  # the data first ...
        self._at("write", COMMIT_PATH, t)
        record = commit_record(t, s, self.gaps, writer_closed=final)
        self._commit_id.write(h5s.ALL, h5s.ALL, record)
        self._at("flush", "(flush)", t)
        self.file.flush()  # ... then the record that vouches for them
