"""The result file's public layout: every dataset, its dtype, axes, units and meaning, and one frame's row.

This module *is* the contract documented in ``docs/result_layout.md`` (a test
compares the two): :data:`DATASETS` lists every dataset with its path, dtype,
axes, fill value, units and description; :class:`FrameRecord` is one analyzed
frame, i.e. one row of every per-frame dataset. :data:`LAYOUT_VERSION` is
bumped for any change other than an addition under a new name.

Axis letters in :attr:`DatasetSpec.axes`: ``T`` frames analyzed, ``S`` spots,
``G`` gaps (these three grow), ``H`` and ``W`` the frame's rows and columns
(fixed when the file is created), a digit a fixed length. Coordinates: x =
column, y = row, pixel centres at integers; frame 0 is the reference frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
        "status_text",
    }
)
#: JSON attributes written at creation; "{}" when the caller gives none.
RUN_INFO_JSON = ("settings_json", "source_json", "camera_json", "units_json", "analysis_json")
FINAL_STATUSES = ("complete", "interrupted", "error")
"""The statuses a writer closes a file with."""
RECOVERED_STATUS = "crashed"
"""The status ``plstream recover`` gives the copy of a file whose writer never closed it."""

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
        Attribute name on :class:`~plstream.analysis.result_file.reader.Results`, and on
        :class:`~plstream.analysis.result_file.layout.FrameRecord` for per-frame data.
    description : str
        Stored as the dataset's ``description`` attribute.
    columns : tuple of str
        For a table (S, k): the name of each column, stored as the
        dataset's ``columns`` attribute (comma-separated); empty otherwise.
    """

    path: str
    dtype: np.dtype
    axes: tuple[str, ...]
    fill: float | int
    units: str
    field: str
    description: str
    columns: tuple[str, ...] = ()

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


def _spec(
    path: str,
    dtype: str,
    axes: str,
    fill: float | int,
    units: str,
    field: str,
    description: str,
    columns: tuple[str, ...] = (),
) -> DatasetSpec:
    return DatasetSpec(path, np.dtype(dtype), tuple(axes.split(",")), fill, units, field, description, columns)


#: Columns of ``/blinking/levels`` (photons, in the units of the trace the states were read from).
LEVEL_COLUMNS = ("off", "on", "gray")
#: Columns of ``/blinking/spot_stats`` (see ``docs/result_layout.md``).
SPOT_STATS_COLUMNS = (
    "n_frames",
    "on_fraction",
    "off_fraction",
    "gray_fraction",
    "n_on_events",
    "n_off_events",
    "n_gray_events",
    "mean_on_frames",
    "mean_off_frames",
    "mean_gray_frames",
    "n_censored",
    "on_level",
    "off_level",
    "gray_level",
    "on_threshold",
    "off_threshold",
    "bleached",
    "alpha_on",
    "alpha_on_error",
    "alpha_off",
    "alpha_off_error",
)
#: The group whose attributes hold the ensemble's dwell-time fits (written when the writer closes).
ENSEMBLE_GROUP = "/blinking/ensemble"


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
    # Added in plstream 0.3 (layout 1):
    _spec(
        "/frames/camera_frame_id",
        "<i8",
        "T",
        -1,
        "1",
        "camera_frame_id",
        "the camera's own number of the frame (GenTL frame ID, Micro-Manager image number); -1 when it has none",
    ),
    # Added in plstream 0.4 (layout 1): the refined blinking states and their statistics.
    _spec(
        "/blinking/segmented",
        "i1",
        "T,S",
        -1,
        "1",
        "segmented",
        "refined state: 1 ON, 0 OFF, 2 GRAY, -1 not measured (final up to /blinking/final_frames, provisional after)",
    ),
    _spec(
        "/blinking/levels",
        "<f4",
        "S,3",
        _NAN,
        "photons",
        "levels",
        "per spot [L_off, L_on, L_gray]: the fitted OFF, ON and GRAY levels (NaN: none)",
        LEVEL_COLUMNS,
    ),
    _spec(
        "/blinking/final_frames",
        "<i8",
        "S",
        0,
        "frame",
        "final_frames",
        "frames 0 .. final_frames-1 of the spot's /blinking/segmented column are final",
    ),
    _spec(
        "/blinking/spot_stats",
        "<f8",
        "S,21",
        _NAN,
        "mixed",
        "spot_stats",
        "per spot blinking statistics, one column per name in the columns attribute (written at close)",
        SPOT_STATS_COLUMNS,
    ),
    # Added in plstream 0.4 (layout 1): rigid drift (translation + rotation)
    _spec(
        "/drift/rotation",
        "<f8",
        "T",
        0.0,
        "rad",
        "drift_rotation",
        "rotation theta of frame t about attrs center_xy: a frame-0 point p appears at R(theta)(p - c) + c + /drift/xy",
    ),
    _spec(
        "/drift/uncertainty",
        "<f4",
        "T,3",
        _NAN,
        "px, px, rad",
        "drift_uncertainty",
        "standard errors of dx, dy and the rotation",
    ),
    _spec(
        "/drift/method",
        "i1",
        "T",
        -1,
        "1",
        "drift_method",
        "how the drift was measured: 0 reference frame, 1 spots, 2 image registration, 3 not measured (kept)",
    ),
)
ADDED_DATASETS = frozenset(
    {
        "/images/mean",
        "/frames/camera_frame_id",
        "/blinking/segmented",
        "/blinking/levels",
        "/blinking/final_frames",
        "/blinking/spot_stats",
        "/drift/rotation",
        "/drift/uncertainty",
        "/drift/method",
    }
)
"""Datasets added under new names after the first files of layout 1 were written: older files lack them."""
FRAME_DATASETS = tuple(s for s in DATASETS if s.per_frame)
TRACE_DATASETS = tuple(s for s in FRAME_DATASETS if s.per_spot)
SPOT_DATASETS = tuple(s for s in DATASETS if s.path.startswith("/spots/"))
#: Per-spot blinking results written apart from the spot table (extended with the spots, filled when known).
BLINKING_SPOT_DATASETS = tuple(s for s in DATASETS if s.path.startswith("/blinking/") and not s.per_frame)
GAP_DATASET = next(s for s in DATASETS if s.axes[0] == "G")
MEAN_IMAGE_DATASET = next(s for s in DATASETS if s.field == "mean_image")
#: Datasets every result file has; the images exist only in files whose writer knew the frame shape.
REQUIRED_DATASETS = tuple(s for s in DATASETS if s.path not in ADDED_DATASETS)
ROTATION_PATH = "/drift/rotation"
"""Its attribute ``center_xy`` is the centre c of the rotation, px (x, y)."""

#: /drift/method codes
DRIFT_METHODS = {"reference": 0, "spots": 1, "registration": 2, "kept": 3}


def rotation_center_xy(frame_shape: FrameShape) -> tuple[float, float]:
    """The centre of the drift's rotation: the image centre ``((W - 1) / 2, (H - 1) / 2)``, px (x, y)."""
    rows, cols = frame_shape
    return (cols - 1) / 2.0, (rows - 1) / 2.0


@dataclass(frozen=True)
class FrameRecord:
    """One analyzed frame: row ``index`` of every per-frame dataset.

    Every per-spot array has length S_t, the number of spots known at this
    frame (spot IDs ``0 .. S_t-1``); S_t never decreases from one record to
    the next. Positions are in frame t's own pixel coordinates.

    Attributes
    ----------
    index : int
        Frame index t: 0, 1, 2, ... in append order, without holes.
    seq : int
        Source sequence number.
    timestamp : float
        Source timestamp, s.
    drift_xy : (2,) float
        [dx, dy], px: where a reference-frame point appears in this frame (about
        the rotation centre, see ``drift_rotation``).
    intensity, background, weighted : (S_t,) float
        Aperture intensity (photons), local background (photons/px), PSF-weighted intensity (photons).
    fit_x, fit_y : (S_t,) float
        Fitted centre, px (NaN where the fit failed or was not made because the spot showed no signal).
    fit_amplitude, fit_sigma, fit_background, fit_uncertainty : (S_t,) float
        Photons, px, photons/px, px (CRLB standard error).
    fit_success : (S_t,) bool or int8
        1 = successful fit.
    state : (S_t,) int8
        1 on, 0 off, -1 not measured.
    camera_frame_id : int
        The camera's own number of the frame (-1 when the source has none).
    segmented : (S_t,) int8 or None
        Provisional refined state (1 ON, 0 OFF, 2 GRAY, -1 not measured),
        rewritten later by the final one; None writes -1.
    drift_rotation : float
        Rotation theta of the frame about :func:`rotation_center_xy`, rad: a
        frame-0 point p appears at ``R(theta) (p - c) + c + drift_xy``.
    drift_uncertainty : (3,) float
        Standard errors of dx, dy (px) and theta (rad); NaN when unknown.
    drift_method : int
        How the drift was measured (:data:`DRIFT_METHODS`; -1 unknown).
    """

    index: int
    seq: int
    timestamp: float
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
    camera_frame_id: int = -1
    segmented: IntArray | None = None
    drift_rotation: float = 0.0
    drift_uncertainty: FloatArray = field(default_factory=lambda: np.full(3, np.nan))
    drift_method: int = -1

    @property
    def n_spots(self) -> int:
        """S_t, the number of spots in this record."""
        return int(np.shape(self.intensity)[0])
