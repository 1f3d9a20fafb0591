"""Reading result files: whole (:func:`load_results`) or while they grow (:class:`ResultFollower`).

The layout is defined in :mod:`plstream.analysis.result_file.layout` and documented in
``docs/result_layout.md``; the writer is :class:`plstream.analysis.result_file.writer.ResultWriter`.
Readers accept every layout version from :data:`~plstream.analysis.result_file.layout.OLDEST_LAYOUT_VERSION`
to :data:`~plstream.analysis.result_file.layout.LAYOUT_VERSION`; what a version lacks
(e.g. ``/images/mean`` in files from plstream < 0.2) is None in :class:`Results`.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from plstream import __version__
from plstream.analysis.result_file import _hdf5 as _io
from plstream.analysis.result_file import layout
from plstream.analysis.result_file.layout import FloatArray, IntArray

__all__ = ["ResultFileError", "ResultFollower", "Results", "load_results"]


class ResultFileError(ValueError):
    """A file that is not a readable plstream result file (the message names it and why)."""


@dataclass(frozen=True)
class Results:
    """A result file's contents as numpy arrays (shapes as in ``docs/result_layout.md``).

    Per-frame arrays have T rows (frames ``first_frame .. first_frame+T-1``),
    per-spot arrays S entries or columns. Entries for frames before a spot
    was discovered are NaN (float), 0 (``fit_success``) or -1 (``state``).
    The remaining array attributes are named after the datasets they come
    from (see :data:`~plstream.analysis.result_file.layout.DATASETS`).

    Attributes
    ----------
    path : Path
    status : str
        "complete", "interrupted", "error", or "running" (still being written,
        or the writer died: the data end at its last flush).
    complete : bool
        ``status == "complete"``.
    layout_version : int
    attrs : dict
        All root attributes as Python values.
    status_text : str
        The status in words with what the run lost, e.g. ``"complete, 697
        frames lost in 1 gap (frames 3-699)"`` (the status alone in files
        written before plstream 0.3, or while running).
    settings, source, camera, summary, units, analysis : dict
        The parsed ``*_json`` attributes ({} when absent; ``analysis`` holds
        the particles' polarity and the signal model, plstream >= 0.4). ``units`` holds
        ``pixel_size_um`` and ``frame_interval_s`` (None when unknown) and
        where each came from (``origin``); see :attr:`pixel_size_um`.
    writer_closed : bool
        The writer wrote all its data (even if the final attributes are missing).
    opened_swmr : bool
        The file had to be opened with ``swmr=True`` (live or crashed writer).
    first_frame : int
        Index of the first frame in the per-frame arrays (0 from ``load_results``).
    mean_image : (H, W) float32 array or None
        ``/images/mean``: the drift-corrected mean image (photons/px/frame, in
        reference-frame coordinates) as of the writer's last flush; NaN if no
        image was written yet. None when the file has no such dataset
        (layout 1, or a writer created without ``frame_shape``).
    segmented : (T, S) int8
        ``/blinking/segmented``, the refined states (1 ON, 0 OFF, 2 GRAY, -1);
        final up to ``final_frames`` per spot; all -1 in files before plstream 0.4.
    levels : (S, 3) float32
        ``/blinking/levels``: [L_off, L_on, L_gray], photons.
    final_frames : (S,) int64
        ``/blinking/final_frames``.
    spot_stats : (S, 21) float64
        ``/blinking/spot_stats`` (columns ``layout.SPOT_STATS_COLUMNS``; NaN until the run closed).
    ensemble : dict
        The attributes of ``/blinking/ensemble`` ({} until the run closed, or in older files).
    """

    path: Path
    status: str
    status_text: str
    complete: bool
    layout_version: int
    attrs: dict[str, Any]
    settings: dict[str, Any]
    source: dict[str, Any]
    camera: dict[str, Any]
    summary: dict[str, Any]
    units: dict[str, Any]
    analysis: dict[str, Any]
    writer_closed: bool
    opened_swmr: bool
    first_frame: int
    spots_x: FloatArray
    spots_y: FloatArray
    spots_first_frame: IntArray
    drift_xy: FloatArray
    intensity: FloatArray
    background: FloatArray
    weighted: FloatArray
    fit_x: FloatArray
    fit_y: FloatArray
    fit_amplitude: FloatArray
    fit_sigma: FloatArray
    fit_background: FloatArray
    fit_uncertainty: FloatArray
    fit_success: IntArray
    state: IntArray
    seq: IntArray
    timestamp: FloatArray
    gaps: IntArray
    mean_image: FloatArray | None
    camera_frame_id: IntArray
    segmented: IntArray
    levels: FloatArray
    final_frames: IntArray
    spot_stats: FloatArray
    ensemble: dict[str, Any]
    drift_rotation: FloatArray
    drift_uncertainty: FloatArray
    drift_method: IntArray
    rotation_center_xy: tuple[float, float] | None

    @property
    def n_frames(self) -> int:
        """T, the number of frames in these arrays."""
        return int(self.seq.shape[0])

    @property
    def n_spots(self) -> int:
        """S, the number of spots."""
        return int(self.spots_x.shape[0])

    @property
    def pixel_size_um(self) -> float | None:
        """Size of a pixel in the sample plane, µm (None when unknown)."""
        value = self.units.get("pixel_size_um")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def signal_units(self) -> str:
        """What intensities and backgrounds are in: ``"photons"`` or ``"ADU"``."""
        return str(self.analysis.get("units", "photons"))

    @property
    def frame_interval_s(self) -> float | None:
        """Time between frames, s (None when unknown)."""
        value = self.units.get("frame_interval_s")
        return float(value) if isinstance(value, (int, float)) else None


# ---------------------------------------------------------------------- file access
def _has_hdf5_signature(path: Path) -> bool:
    signature = b"\x89HDF\r\n\x1a\n"
    with open(path, "rb") as fh:
        offset = 0
        while True:
            fh.seek(offset)
            head = fh.read(8)
            if head == signature:
                return True
            if len(head) < 8:
                return False
            offset = 512 if offset == 0 else offset * 2


def _open_for_reading(path: Path, *, swmr_only: bool = False, lock_timeout_s: float = 2.0) -> tuple[h5py.File, bool]:
    """Open a result file read-only; returns the file and whether it was opened with ``swmr=True``.

    A plain open fails on a file whose SWMR writer is still running or was
    killed ("file is already open for write": the consistency flag is still
    set); such a file is reopened with ``swmr=True``, which HDF5 guarantees to
    be readable. ``swmr_only`` skips the plain open (live readers). A file
    that is locked for a moment (being created or finalized) is retried for
    ``lock_timeout_s``.
    """
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, f"no result file at {path}", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder, not a result file", str(path))
    deadline = time.monotonic() + lock_timeout_s
    while True:
        plain_exc: OSError | None = None
        if not swmr_only:
            try:
                return h5py.File(path, "r", **_io.file_access()), False
            except OSError as exc:
                plain_exc = exc
        try:
            return h5py.File(path, "r", swmr=True, libver="latest", **_io.file_access()), True
        except OSError as swmr_exc:
            locked = _io.is_lock_error(swmr_exc) and (plain_exc is None or _io.is_lock_error(plain_exc))
            if locked and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            if not _has_hdf5_signature(path):
                raise ResultFileError(f"{path} is not an HDF5 file; give the .h5 file plstream wrote") from None
            first = f"{plain_exc} (and with swmr=True: {swmr_exc})" if plain_exc else str(swmr_exc)
            raise ResultFileError(f"cannot open the result file {path}: {first}") from swmr_exc


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_commit(f: h5py.File) -> dict[str, Any]:
    """The commit record as a dict (frames, spots, gaps, flush_unix_s, writer_closed)."""
    names = layout.COMMIT_DTYPE.names
    if names is None:  # numpy types .names as optional: only a structured dtype has fields
        raise TypeError("layout.COMMIT_DTYPE must be a structured dtype (one field per commit counter)")
    rec = f[layout.COMMIT_PATH][()]
    return {name: rec[name].item() for name in names}


def _json_attr(attrs: dict[str, Any], key: str) -> dict[str, Any]:
    """Parse the JSON string attribute ``key`` ({} when absent)."""
    text = attrs.get(key)
    if text in (None, ""):
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attribute {key} is not valid JSON: {exc}") from exc
    return value if isinstance(value, dict) else {"value": value}


def _attrs(f: h5py.File) -> dict[str, Any]:
    return {key: _attr_value(value) for key, value in f.attrs.items()}


def _read_limits(f: h5py.File, commit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The commit record (read now unless given), with counts clamped to the datasets' extents.

    Rows past ``frames`` (and columns past ``spots``) may exist after a crash
    mid-flush, holding fill values; readers never return them.
    """
    commit = _read_commit(f) if commit is None else commit
    frames = min([commit["frames"], *(f[s.path].shape[0] for s in layout.FRAME_DATASETS if s.path in f)])
    spots = min(
        [commit["spots"], *(f[s.path].shape[s.axes.index("S")] for s in layout.DATASETS if s.per_spot and s.path in f)]
    )
    gaps = min(commit["gaps"], f[layout.GAP_DATASET.path].shape[0])
    return {**commit, "frames": frames, "spots": spots, "gaps": gaps}


def _check_layout(path: Path, attrs: dict[str, Any], plstream_version: str) -> int:
    """The file's layout version, or ResultFileError if this code cannot read it."""
    if "layout_version" not in attrs:
        raise ResultFileError(f"{path} is not a plstream result file (it has no layout_version attribute)")
    version = int(attrs["layout_version"])
    oldest, newest = layout.OLDEST_LAYOUT_VERSION, layout.LAYOUT_VERSION
    if version > newest:
        raise ResultFileError(
            f"{path} uses result layout version {version}, but this plstream ({plstream_version}) reads "
            f"versions {oldest} up to {newest}; upgrade plstream to read it"
        )
    if version < oldest:
        raise ResultFileError(
            f"{path} has an invalid result layout version {version} (plstream writes versions {oldest} to {newest})"
        )
    return version


def _read_fields(
    f: h5py.File, path: Path, limits: dict[str, Any], *, start: int = 0, stop: int | None = None
) -> dict[str, Any]:
    """Everything a ``Results`` holds, as a dict of its fields.

    Frames ``start .. limits["frames"]-1``, spots ``0 .. limits["spots"]-1``;
    images whole, or None where the file has none.
    """
    attrs = _attrs(f)
    missing = sorted(s.path for s in layout.REQUIRED_DATASETS if s.path not in f)
    if missing:
        raise ResultFileError(f"{path} lacks the datasets {', '.join(missing)}; it is not a complete result file")
    t1 = limits["frames"] if stop is None else max(0, min(stop, limits["frames"]))
    t0, s = min(start, t1), limits["spots"]
    out: dict[str, Any] = {}
    for spec in layout.DATASETS:
        if spec.is_image:
            out[spec.field] = f[spec.path][()] if spec.path in f else None
            continue
        if spec.path not in f:  # added after this file was written: what it would have held
            rows = t1 - t0 if spec.per_frame else 0
            out[spec.field] = np.full((rows, *(int(a) for a in spec.axes[1:])), spec.fill, dtype=spec.dtype)
            continue
        d = f[spec.path]
        if spec.axes == ("T", "S"):
            out[spec.field] = d[t0:t1, :s] if s else np.zeros((t1 - t0, 0), dtype=spec.dtype)
        elif spec.per_frame:
            out[spec.field] = d[t0:t1]
        elif spec.axes[0] == "S":
            values = d[:s]
            if len(values) < s:  # not written yet: what the file would hold
                padded = np.full((s, *values.shape[1:]), spec.fill, dtype=spec.dtype)
                padded[: len(values)] = values
                values = padded
            out[spec.field] = values
        else:
            out[spec.field] = d[: limits["gaps"]]
    group = f.get(layout.ENSEMBLE_GROUP)
    out["ensemble"] = {k: _attr_value(v) for k, v in group.attrs.items() if k != "description"} if group else {}
    try:
        parsed = {
            name: _json_attr(attrs, f"{name}_json")
            for name in ("settings", "source", "camera", "summary", "units", "analysis")
        }
    except ValueError as exc:
        raise ResultFileError(f"{path}: {exc}") from exc
    status = str(attrs.get("status", "running"))
    centre = f[layout.ROTATION_PATH].attrs.get("center_xy") if layout.ROTATION_PATH in f else None
    return {
        "rotation_center_xy": None if centre is None else (float(centre[0]), float(centre[1])),
        **out,
        **parsed,
        "attrs": attrs,
        "status": status,
        "status_text": str(attrs.get("status_text", status)),
        "complete": status == "complete",
        "writer_closed": bool(limits["writer_closed"]),
        "first_frame": t0,
    }


def _results_from(
    f: h5py.File, path: Path, opened_swmr: bool, limits: dict[str, Any], start: int = 0, stop: int | None = None
) -> Results:
    fields = _read_fields(f, path, limits, start=start, stop=stop)
    version = _check_layout(path, fields["attrs"], __version__)
    return Results(path=path, layout_version=version, opened_swmr=opened_swmr, **fields)


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read a whole result file.

    A file whose writer is still running, or was killed, cannot be opened
    normally (HDF5's consistency flag is still set); it is then opened with
    ``swmr=True``, and what is returned is everything up to the writer's
    last flush (``status == "running"``).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ResultFileError (a ValueError)
        Not HDF5, not a plstream result file, or a newer layout version than
        this plstream reads (the message says to upgrade).
    """
    path = Path(path)
    f, opened_swmr = _open_for_reading(path)
    with f:
        _check_layout(path, _attrs(f), __version__)
        return _results_from(f, path, opened_swmr, _read_limits(f))


class ResultFollower:
    """Follows a result file while it is being written (e.g. for a dashboard).

    Opens the file with ``swmr=True``; :meth:`refresh` picks up what the
    writer has committed since; :meth:`read` returns it. Once the writer has
    written its last data, the follower lets go of the file so the writer can
    write the final attributes; :attr:`finished` is then True and
    :meth:`read` reopens the file briefly. Use on a local disk only (SWMR
    does not work over NFS/SMB).

    Examples
    --------
    >>> with ResultFollower("run.h5") as live:  # doctest: +SKIP
    ...     shown = 0
    ...     while not live.finished:
    ...         if live.refresh():
    ...             new = live.read(start=shown)  # frames shown .. live.n_frames-1
    ...             shown = live.n_frames
    ...         time.sleep(0.5)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None
        self._file, _ = _open_for_reading(self.path, swmr_only=True)
        try:
            _check_layout(self.path, _attrs(self._file), __version__)
            self._limits = _read_limits(self._file)
        except BaseException:
            self.close()
            raise
        if self._limits["writer_closed"]:
            self.close()

    def __enter__(self) -> ResultFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_frames(self) -> int:
        """Frames committed as of the last refresh."""
        return int(self._limits["frames"])

    @property
    def n_spots(self) -> int:
        """Spots committed as of the last refresh."""
        return int(self._limits["spots"])

    @property
    def finished(self) -> bool:
        """The writer has written all its data (or the follower was closed)."""
        return self._file is None

    @property
    def last_flush_unix_s(self) -> float:
        """When the writer last committed (Unix time, s): a heartbeat; a stale one means a dead writer."""
        return float(self._limits["flush_unix_s"])

    def refresh(self) -> int:
        """Pick up the writer's latest commit; returns how many new frames it brought."""
        f = self._file
        if f is None:
            return 0
        f[layout.COMMIT_PATH].refresh()  # the commit record first: the data it vouches for are on disk
        commit = _read_commit(f)
        for spec in layout.DATASETS:
            if spec.path in f:
                f[spec.path].refresh()
        before = self.n_frames
        self._limits = _read_limits(f, commit)
        if self._limits["writer_closed"]:
            self.close()
        return self.n_frames - before

    def read(self, start: int = 0, stop: int | None = None) -> Results:
        """Frames ``start .. n_frames-1`` (or ``.. stop-1``) and the spot table, as of the last :meth:`refresh`.

        ``mean_image`` is the image the writer last flushed when this is called
        (while the writer rewrites it, parts of two consecutive images may be mixed).
        """
        if self._file is not None:
            return _results_from(self._file, self.path, True, self._limits, start, stop)
        f, opened_swmr = _open_for_reading(self.path)
        with f:
            return _results_from(f, self.path, opened_swmr, self._limits, start, stop)

    def close(self) -> None:
        """Let go of the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
