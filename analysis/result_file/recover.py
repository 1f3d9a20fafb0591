"""Recovering a result file whose writer never closed it: :func:`recover_result_file`.

A writer that was killed, crashed, or stopped by a write error (disk full)
leaves a valid SWMR file that opens only with ``swmr=True`` and whose status
still says ``running``. Recovery copies what its commit record vouches for
(rows ``0 .. frames-1``, spots ``0 .. spots-1``, gaps ``0 .. gaps-1``, the spot
table and the mean image, every root attribute) into a new file written
normally, marks it ``crashed`` (with ``recovered_utc`` and ``recovery_json``),
flushes it to disk (``fsync``) under a temporary name in the same folder, and
only then renames it over its final name (``os.replace``), so no reader ever
sees a half-written file. The copy opens with any HDF5 program.

The result file's lock (``<result>.lock``) is held during recovery: a file
that a live process is still writing is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from plstream.analysis.result_file import _hdf5 as _io
from plstream.analysis.result_file import layout
from plstream.analysis.result_file.errors import ResultWriteError
from plstream.analysis.result_file.lock import ResultLock, ensure_unlocked
from plstream.analysis.result_file.reader import _attrs, _check_layout, _open_for_reading, _read_limits

__all__ = ["Recovery", "recover_result_file"]

logger = logging.getLogger(__name__)

_COPY_BLOCK_BYTES = 16 * 2**20  # memory for one block of rows while copying
TEMP_SUFFIX = ".recover-tmp"


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover_result_file` found and did.

    Attributes
    ----------
    source : Path
        The file that was checked.
    path : Path
        The readable file: ``source`` itself when nothing had to be done or it
        was replaced in place, else the ``out`` given.
    recovered : bool
        A copy was written (False: ``source`` was already closed and readable).
    original_status : str
        The ``status`` attribute found (``running`` for a writer that never closed the file).
    status : str
        The status of :attr:`path` now (``crashed`` after a recovery).
    frames, spots, gaps : int
        Kept: what the commit record vouched for (all of them when nothing was done).
    rows_dropped : int
        Frame rows past the commit record (a flush that never completed): not results, not kept.
    last_flush_unix_s : float
        When the writer last committed (s since the Unix epoch; 0 when it never did).
    writer_closed : bool
        The writer had written all its data (it died while writing the final attributes).
    """

    source: Path
    path: Path
    recovered: bool
    original_status: str
    status: str
    frames: int
    spots: int
    gaps: int
    rows_dropped: int
    last_flush_unix_s: float
    writer_closed: bool

    def describe(self) -> str:
        """One sentence for the user."""
        if not self.recovered:
            return f"{self.path} is closed and readable (status {self.status}); nothing to recover"
        when = (
            time.strftime(" (last commit %Y-%m-%d %H:%M:%S)", time.localtime(self.last_flush_unix_s))
            if self.last_flush_unix_s > 0
            else ""
        )
        dropped = f"; {self.rows_dropped} uncommitted rows dropped" if self.rows_dropped else ""
        where = "" if self.path == self.source else f" from {self.source}"
        return (
            f"{self.path}: recovered{where} (status was {self.original_status!r}, now {self.status!r}): "
            f"kept {self.frames} frames, {self.spots} spots, {self.gaps} gaps{when}{dropped}"
        )


def recover_result_file(path: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None) -> Recovery:
    """Make the committed rows of a result file readable without SWMR; see the module docstring.

    Parameters
    ----------
    path : path
        The result file to check.
    out : path, optional
        Write the recovered copy here (it must not exist) and leave ``path``
        as it is; by default ``path`` is replaced by its recovered copy.

    Returns
    -------
    Recovery

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ResultFileLocked
        A live process is writing ``path`` (or ``out``): recover it after it ended.
    ResultFileError
        ``path`` is not a readable plstream result file, even with ``swmr=True``.
    ResultWriteError
        The copy could not be written (e.g. no room for it: use ``out`` on another disk).
    """
    source = Path(path)
    target = Path(out) if out is not None else source
    with ResultLock(source, purpose="recovering"):
        if target != source:
            ensure_unlocked(target)
            if target.exists():
                raise FileExistsError(f"{target} already exists; give a new file for the recovered copy")
        f, opened_swmr = _open_for_reading(source)
        with f:
            attrs = _attrs(f)
            _check_layout(source, attrs, _io_version())
            limits = _read_limits(f)
            status = str(attrs.get("status", "running"))
            closed = not opened_swmr and status != "running" and "closed_utc" in attrs
            if closed:
                return Recovery(
                    source=source,
                    path=source,
                    recovered=False,
                    original_status=status,
                    status=status,
                    frames=int(limits["frames"]),
                    spots=int(limits["spots"]),
                    gaps=int(limits["gaps"]),
                    rows_dropped=0,
                    last_flush_unix_s=float(limits["flush_unix_s"]),
                    writer_closed=bool(limits["writer_closed"]),
                )
            rows_written = max(f[s.path].shape[0] for s in layout.FRAME_DATASETS if s.path in f)
            recovery = Recovery(
                source=source,
                path=target,
                recovered=True,
                original_status=status,
                status=layout.RECOVERED_STATUS,
                frames=int(limits["frames"]),
                spots=int(limits["spots"]),
                gaps=int(limits["gaps"]),
                rows_dropped=max(0, rows_written - int(limits["frames"])),
                last_flush_unix_s=float(limits["flush_unix_s"]),
                writer_closed=bool(limits["writer_closed"]),
            )
            _write_copy_atomically(f, attrs, recovery, target)
    logger.info("%s", recovery.describe())
    return recovery


def _io_version() -> str:
    from plstream import __version__

    return __version__


def _write_copy_atomically(f: h5py.File, attrs: dict[str, Any], recovery: Recovery, target: Path) -> None:
    """Copy into ``.<name>.recover-tmp`` beside ``target``, fsync it, then rename it over ``target``."""
    temp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
    temp.unlink(missing_ok=True)  # left by a recovery that was itself killed
    try:
        g = h5py.File(temp, "w", libver="latest", **_io.file_access())
        keep: list[h5py.Dataset] = []
        try:
            _copy(f, g, attrs, recovery, keep)
        except BaseException:
            _io.abandon(g, keep_alive=tuple(keep))  # a plain close after a failed write can crash the process
            raise
        g.close()
        _fsync(temp)
        os.replace(temp, target)
        _fsync_folder(target.parent)
    except (OSError, RuntimeError) as exc:  # h5py reports a failed write as a RuntimeError
        temp.unlink(missing_ok=True)
        code, words = _io.os_error_of(exc)
        reason = f"[Errno {code}] {words}" if code is not None else str(exc).splitlines()[0]
        raise ResultWriteError(
            f"could not write the recovered copy of {recovery.source} to {target}: {reason}"
            + ("; free some space, or write the copy to another disk with --out" if code in (28, 27, 122) else ""),
            path=target,
        ) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _copy(f: h5py.File, g: h5py.File, attrs: dict[str, Any], recovery: Recovery, keep: list[h5py.Dataset]) -> None:
    """Copy the committed part of ``f`` into the new file ``g``, and flush it.

    Every dataset object of ``g`` goes into ``keep`` and stays referenced
    until the file is closed: one dropped early is closed by HDF5 at once,
    and a close whose write fails (disk full) leaves HDF5 unable to close
    the file without crashing.
    """
    t, s, n_gaps = recovery.frames, recovery.spots, recovery.gaps
    for spec in layout.DATASETS:
        if spec.path not in f:
            continue
        src = f[spec.path]
        if spec.is_image:
            rows, cols = src.shape
            _, maxshape, chunks = spec.storage((rows, cols))
            dst = g.create_dataset(spec.path, data=src[()], maxshape=maxshape, chunks=chunks, fillvalue=spec.fill)
        else:
            extent = tuple(t if a == "T" else s if a == "S" else n_gaps if a == "G" else int(a) for a in spec.axes)
            _, maxshape, chunks = spec.storage()
            dst = g.create_dataset(
                spec.path, shape=extent, maxshape=maxshape, dtype=spec.dtype, chunks=chunks, fillvalue=spec.fill
            )
            _copy_rows(src, dst, extent)
        keep.append(dst)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    commit = g.create_dataset(layout.COMMIT_PATH, data=_io.commit_record(t, s, n_gaps, writer_closed=True))
    for key, value in f[layout.COMMIT_PATH].attrs.items():
        commit.attrs[key] = value
    commit[()] = _with_flush_time(commit[()], recovery.last_flush_unix_s)
    for key, value in f.attrs.items():
        g.attrs[key] = value
    summary = _json(attrs.get("summary_json"))
    summary["recovered"] = _recovery_facts(recovery)
    now = _io.utc_now()
    g.attrs["status"] = recovery.status
    g.attrs["status_text"] = (
        f"{recovery.status}: the writer stopped without closing the file (killed, crashed, or a write error); "
        f"recovered by 'plstream recover' at {now}: {t} frames, {s} spots and {n_gaps} gaps it had committed"
    )
    g.attrs["summary_json"] = json.dumps(summary, default=_io.json_default)
    g.attrs["frames_analyzed"] = np.int64(t)
    g.attrs["closed_utc"] = now
    g.attrs["recovered_utc"] = now
    g.attrs["recovery_json"] = json.dumps(_recovery_facts(recovery), default=_io.json_default)
    keep.append(commit)
    g.flush()


def _copy_rows(src: h5py.Dataset, dst: h5py.Dataset, extent: tuple[int, ...]) -> None:
    """Copy ``src[:extent[0], :extent[1]...]`` into ``dst`` in blocks of rows of bounded memory."""
    if 0 in extent:
        return
    row_bytes = int(np.prod(extent[1:], dtype=np.int64)) * src.dtype.itemsize if len(extent) > 1 else src.dtype.itemsize
    step = max(1, _COPY_BLOCK_BYTES // max(row_bytes, 1))
    rest = tuple(slice(0, n) for n in extent[1:])
    for start in range(0, extent[0], step):
        stop = min(extent[0], start + step)
        dst[(slice(start, stop), *rest)] = src[(slice(start, stop), *rest)]


def _with_flush_time(record: np.ndarray, flush_unix_s: float) -> np.ndarray:
    record = np.array(record, copy=True)
    record["flush_unix_s"] = flush_unix_s
    return record


def _recovery_facts(recovery: Recovery) -> dict[str, Any]:
    facts = asdict(recovery)
    facts["source"], facts["path"] = str(recovery.source), str(recovery.path)
    return facts


def _json(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    with contextlib.suppress(ValueError):
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    return {}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        logger.debug("fsync of the folder %s: %s", folder, exc)
    finally:
        os.close(fd)
