"""The analyzer-side history a live dashboard pulls: :class:`LiveState`.

The analysis thread appends each result row (:meth:`LiveState.append`) and now
and then offers the latest frame, the spot table and the mean image; a live
result server thread answers a viewer's :class:`~plstream.stream.live.messages.LiveRequest`
with :meth:`LiveState.update_for`. Neither waits for the other: one lock
guards only the *bookkeeping* (row and spot counts, array and image
references), held for a few attribute reads or writes, never for a copy of a
whole history.

Why that is safe: rows are append-only. Row ``t`` is written completely
before the row count is raised past it (under the lock) and never changes
afterwards; when a buffer grows, the rows are copied into a *new* array and
the old one is left untouched, so a reader copying from the references it
took under the lock always sees finished rows. Images are stored as private
read-only copies and replaced, never modified.

Memory
------
The per-spot history takes about **5 bytes × T × S** (float32 intensity +
int8 state; T frames analyzed, S spots), plus 32 bytes per frame (seq,
timestamp, drift). Capacities double when full, in frames and in spots
independently (amortized O(S) work per frame; no allocation on the frames in
between); the spot axis may hold up to 2 × S columns, and frame rows beyond T
are reserved but not written, so the operating system commits them only when
used. Examples: 10 000 frames × 100 spots ≈ 5 MB; 100 000 frames × 500 spots
≈ 250 MB (up to twice that while the spot capacity is half used).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from plstream.stream.live.messages import LiveRequest, LiveUpdate

__all__ = ["LiveState", "ResultRow"]

logger = logging.getLogger(__name__)

_INITIAL_FRAMES = 256
_INITIAL_SPOTS = 64


class ResultRow(Protocol):
    """The part of one analyzed frame the live history keeps (e.g. a
    :class:`~plstream.analysis.result_file.layout.FrameRecord`)."""

    @property
    def index(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def drift_xy(self) -> np.ndarray: ...
    @property
    def intensity(self) -> np.ndarray: ...
    @property
    def state(self) -> np.ndarray: ...


def _grown(capacity: int, needed: int) -> int:
    """The smallest doubling of ``capacity`` that holds ``needed``."""
    while capacity < needed:
        capacity *= 2
    return capacity


class LiveState:
    """Thread-safe, growable history of a running analysis, served to live viewers.

    One writer (the analysis thread) calls :meth:`append`, :meth:`set_spots`,
    :meth:`offer_image`, :meth:`set_mean_image` and :meth:`update_info`; any
    number of readers (server threads) call :meth:`update_for`. See the module
    docstring for the memory used (≈ 5 bytes × frames × spots).

    Parameters
    ----------
    info : dict
        The run description sent with every reply (``LiveUpdate.info``:
        ``run_uid``, ``shape``, ``source``, ``result_path``, ``frame_rate_hz``,
        ``psf_sigma_px``). Keys not known yet may be filled in later with
        :meth:`update_info` (e.g. the shape once the stream has started).
    status_provider : callable
        Returns the ``LiveUpdate.status`` dict (``state``, counters, rates);
        called once per reply from the reader's thread, outside the lock, so
        it must be cheap and safe to call from another thread.
    session_id : str, optional
        Identifier of this analyzer session; a new ``uuid4().hex`` by default.
    initial_frames, initial_spots : int
        First capacities of the frame and spot axes (they double when full).

    Examples
    --------
    >>> state = LiveState({"result_path": "run.h5"}, lambda: {"state": "waiting"})
    >>> update = state.update_for(LiveRequest())
    >>> update.n_frames, update.n_spots, update.status["state"]
    (0, 0, 'waiting')
    """

    def __init__(
        self,
        info: dict[str, Any],
        status_provider: Callable[[], dict[str, Any]],
        *,
        session_id: str | None = None,
        initial_frames: int = _INITIAL_FRAMES,
        initial_spots: int = _INITIAL_SPOTS,
    ) -> None:
        if initial_frames < 1 or initial_spots < 1:
            raise ValueError(f"initial_frames and initial_spots must be >= 1, got {initial_frames} and {initial_spots}")
        self.session_id = session_id if session_id is not None else uuid.uuid4().hex
        self._status_provider = status_provider
        self._lock = threading.Lock()
        self._info: dict[str, Any] = dict(info)
        # Per-frame history; rows < _n are final, rows >= _n are unwritten.
        self._n = 0
        self._seq = np.empty(initial_frames, np.int64)
        self._timestamp = np.empty(initial_frames, np.float64)
        self._drift = np.empty((initial_frames, 2), np.float64)
        self._intensity = np.empty((initial_frames, initial_spots), np.float32)
        self._state = np.empty((initial_frames, initial_spots), np.int8)
        self._columns = 0  # most spots any row has (S of the records)
        self._first_seen = np.empty(initial_spots, np.int64)  # first row with each column
        # Spot table (replaced as a whole by set_spots).
        self._spots_x = np.zeros(0, np.float64)
        self._spots_y = np.zeros(0, np.float64)
        self._spots_first = np.zeros(0, np.int64)
        # Images (private read-only copies, replaced, never modified).
        self._image: np.ndarray | None = None
        self._image_frame = -1
        self._image_version = -1
        self._mean: np.ndarray | None = None
        self._mean_version = -1
        self.reallocations = 0
        """How often the history buffers grew (for tests and benchmarks)."""
        self.requests_served = 0
        """How many :meth:`update_for` calls were answered."""

    # ------------------------------------------------------------------ reading sizes
    @property
    def n_frames(self) -> int:
        """T, rows appended so far."""
        return self._n

    @property
    def n_spots(self) -> int:
        """S, the spots a reply describes: the larger of the spot table and the widest row."""
        return max(self._columns, int(self._spots_x.shape[0]))

    @property
    def image_version(self) -> int:
        """Version of the latest frame image (-1 before the first)."""
        return self._image_version

    @property
    def mean_version(self) -> int:
        """Version of the mean image (-1 before the first)."""
        return self._mean_version

    @property
    def capacity(self) -> tuple[int, int]:
        """(frames, spots) the history buffers hold before they grow again."""
        return int(self._intensity.shape[0]), int(self._intensity.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes reserved by the per-frame history buffers."""
        return sum(a.nbytes for a in (self._seq, self._timestamp, self._drift, self._intensity, self._state))

    @property
    def info(self) -> dict[str, Any]:
        """A copy of the run description."""
        with self._lock:
            return dict(self._info)

    # ------------------------------------------------------------------ writing (analysis thread)
    def update_info(self, **fields: Any) -> None:
        """Fill in or change keys of the run description (e.g. ``shape`` once the stream started)."""
        with self._lock:
            self._info = {**self._info, **fields}

    def append(self, record: ResultRow) -> None:
        """Add one result row (its seq, timestamp, drift, intensity and state).

        Parameters
        ----------
        record : ResultRow
            Row ``index`` must be the next one (:attr:`n_frames`). Its per-spot
            arrays have S_t entries; columns S_t.. of the row are NaN (intensity)
            and -1 (state), as are a spot's entries before its discovery.

        Raises
        ------
        ValueError
            The record is out of order or its per-spot arrays differ in length.
        """
        t = self._n
        if record.index != t:
            raise ValueError(
                f"live history: record {record.index} arrived but row {t} is next; append records in order"
            )
        k = int(np.shape(record.intensity)[0])
        if np.shape(record.state) != (k,):
            raise ValueError(
                f"live history: record {t} has {k} intensities but state of shape {np.shape(record.state)}"
            )
        self._reserve(t + 1, k)
        # Row t is beyond what readers may look at until _n is raised below.
        self._seq[t] = record.seq
        self._timestamp[t] = record.timestamp
        self._drift[t] = record.drift_xy
        self._intensity[t, :k] = record.intensity
        self._intensity[t, k:] = np.nan
        self._state[t, :k] = record.state
        self._state[t, k:] = -1
        if k > self._columns:
            self._first_seen[self._columns : k] = t
        with self._lock:
            self._columns = max(self._columns, k)
            self._n = t + 1

    def set_spots(self, x: np.ndarray, y: np.ndarray, first_frame: np.ndarray) -> None:
        """Replace the spot table (reference-frame px, discovery frame index); copies the arrays.

        Spot IDs are indices, so the table may only grow.

        Raises
        ------
        ValueError
            The arrays are not 1-D of one length, or the table shrank.
        """
        xs = np.array(x, dtype=np.float64, copy=True)
        ys = np.array(y, dtype=np.float64, copy=True)
        first = np.array(first_frame, dtype=np.int64, copy=True)
        if xs.ndim != 1 or xs.shape != ys.shape or xs.shape != first.shape:
            raise ValueError(
                f"set_spots needs three 1-D arrays of one length, got {xs.shape}, {ys.shape}, {first.shape}"
            )
        if xs.shape[0] < self._spots_x.shape[0]:
            raise ValueError(
                f"the spot table shrank from {self._spots_x.shape[0]} to {xs.shape[0]} spots; spot IDs must stay stable"
            )
        for a in (xs, ys, first):
            a.flags.writeable = False
        with self._lock:
            self._spots_x, self._spots_y, self._spots_first = xs, ys, first

    def offer_image(self, frame_index: int, image: np.ndarray) -> None:
        """Store a copy of the latest frame (raw camera units) and bump :attr:`image_version`."""
        copy = np.array(image, copy=True)
        if copy.ndim != 2:
            raise ValueError(f"offer_image needs a 2-D frame, got shape {copy.shape}")
        copy.flags.writeable = False
        with self._lock:
            self._image, self._image_frame = copy, int(frame_index)
            self._image_version += 1

    def set_mean_image(self, image: np.ndarray) -> None:
        """Store a float32 copy of the drift-corrected mean image and bump :attr:`mean_version`."""
        copy = np.array(image, dtype=np.float32, copy=True)
        if copy.ndim != 2:
            raise ValueError(f"set_mean_image needs a 2-D image, got shape {copy.shape}")
        copy.flags.writeable = False
        with self._lock:
            self._mean = copy
            self._mean_version += 1

    def _reserve(self, frames: int, spots: int) -> None:
        """Grow the buffers (doubling) so that ``frames`` rows of ``spots`` columns fit."""
        cap_t, cap_s = self.capacity
        new_t, new_s = _grown(cap_t, frames), _grown(cap_s, spots)
        if (new_t, new_s) == (cap_t, cap_s):
            return
        n, cols = self._n, min(cap_s, new_s)
        seq = np.empty(new_t, np.int64)
        timestamp = np.empty(new_t, np.float64)
        drift = np.empty((new_t, 2), np.float64)
        intensity = np.empty((new_t, new_s), np.float32)
        state = np.empty((new_t, new_s), np.int8)
        seq[:n], timestamp[:n], drift[:n] = self._seq[:n], self._timestamp[:n], self._drift[:n]
        intensity[:n, :cols] = self._intensity[:n, :cols]
        intensity[:n, cols:] = np.nan
        state[:n, :cols] = self._state[:n, :cols]
        state[:n, cols:] = -1
        first_seen = np.empty(new_s, np.int64)
        first_seen[: self._columns] = self._first_seen[: self._columns]
        mb = (intensity.nbytes + state.nbytes) / 1e6
        logger.debug("live history grows to %d frames x %d spots (%.1f MB reserved)", new_t, new_s, mb)
        with self._lock:
            self._seq, self._timestamp, self._drift = seq, timestamp, drift
            self._intensity, self._state, self._first_seen = intensity, state, first_seen
            self.reallocations += 1

    # ------------------------------------------------------------------ reading (server threads)
    def update_for(self, request: LiveRequest) -> LiveUpdate:
        """The reply to a viewer's request: its missing rows, the spot table, status and newer images.

        Parameters
        ----------
        request : LiveRequest
            Rows from ``request.since_frame`` (from 0 when ``request.session_id``
            is not this session's), at most ``request.max_frames`` of them; the
            latest frame and the mean image only when newer than the versions
            the request says the viewer has.

        Returns
        -------
        LiveUpdate
            Arrays are fresh copies (the mutable ones) or read-only shared
            images; S is :attr:`n_spots` at the time of the reply. Spots whose
            row data exist but whose position is not in the spot table yet have
            NaN positions until the next :meth:`set_spots`.
        """
        same_session = request.session_id == self.session_id
        with self._lock:  # references and counts only; the copies are made below
            n, columns = self._n, self._columns
            seq, timestamp, drift = self._seq, self._timestamp, self._drift
            intensity, state, first_seen = self._intensity, self._state, self._first_seen
            spots_x, spots_y, spots_first = self._spots_x, self._spots_y, self._spots_first
            image, image_frame, image_version = self._image, self._image_frame, self._image_version
            mean, mean_version = self._mean, self._mean_version
            info = dict(self._info)
            self.requests_served += 1
        status = self._status_provider()

        start = min(max(request.since_frame, 0), n) if same_session else 0
        stop = start + min(max(request.max_frames, 0), n - start)
        n_table = int(spots_x.shape[0])
        s = max(columns, n_table)
        width = min(s, int(intensity.shape[1]))  # columns held in the buffers; any beyond are NaN / -1
        rows_i = np.full((stop - start, s), np.nan, np.float32)
        rows_s = np.full((stop - start, s), -1, np.int8)
        rows_i[:, :width] = intensity[start:stop, :width]
        rows_s[:, :width] = state[start:stop, :width]
        if n_table >= s:
            xs, ys, firsts = spots_x, spots_y, spots_first
        else:  # spots seen in rows before the table caught up
            xs = np.concatenate([spots_x, np.full(s - n_table, np.nan)])
            ys = np.concatenate([spots_y, np.full(s - n_table, np.nan)])
            firsts = np.concatenate([spots_first, first_seen[n_table:s]])

        have_image = request.image_version if same_session else -1
        have_mean = request.mean_version if same_session else -1
        return LiveUpdate(
            session_id=self.session_id,
            info=info,
            status=status,
            first_frame=start,
            n_frames_total=n,
            seq=seq[start:stop].copy(),
            timestamp=timestamp[start:stop].copy(),
            drift_xy=drift[start:stop].copy(),
            intensity=rows_i,
            state=rows_s,
            spots_x=xs,
            spots_y=ys,
            spots_first_frame=firsts,
            image=image if image is not None and image_version > have_image else None,
            image_frame=image_frame,
            image_version=image_version,
            mean_image=mean if mean is not None and mean_version > have_mean else None,
            mean_version=mean_version,
        )
