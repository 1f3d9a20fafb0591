"""Continuing an interrupted analysis from its result file: :func:`read_resume_point`.

The analysis of frame t depends on what came before it (the spot catalog and
its refined positions, the drift, the drift-corrected running mean, each
spot's ON level, the fits' warm starts), and the result file keeps most of
it. :func:`read_resume_point` rebuilds that state from a closed result file
(``interrupted``, ``error``, or ``crashed`` after ``plstream recover``), so
that the analysis goes on at the frame after the last committed one:

Exact (from the file): the rows already written (never touched again); which
frames are done (the next frame is the one after the last committed
``seq``: no duplicate, no hole); the camera model; the spot IDs and their
discovery frames; the drift of the last frame; each spot's ON level (replayed
from its stored states and intensities, to float32 rounding); the fits' warm
starts (the last row's fits, to float32 rounding); the detection schedule.

Approximate: the spots' reference positions are the final spot table of a
closed file; after a crash (its table may be older than the last rows) they
are the inverse-variance mean of each spot's drift-corrected fits. Their
refinement weights are rebuilt from the fits' uncertainties (all successful
fits, where the run used its drift inliers); the PSF width is the run's measured one when the file was
closed, else the median fitted sigma. The drift-corrected running mean of a
closed file is its final mean image (float32), with the per-pixel frame counts
rebuilt from the drift; after a crash the saved mean holds an unknown number
of frames, so the mean starts again from the frame after the resume. Spots
that appear later are found from that mean (re-detected from a mean of fewer
frames after a crash), possibly some frames later or earlier than in an
uninterrupted run; the drift-method counts start from the stored summary.

So rows after the resume agree with an uninterrupted run to within the fits'
own noise, not bit for bit. Measured in the tests (rigid-drift analyzer of
plstream 0.4): rows before the resume untouched; states after it equal; drift
within 0.01 px (its own precision is ~0.013 px); positions within 0.005 px;
intensities within a few photons. Spots found after the resume are searched
for in a mean rebuilt from the file, so a late search can find a spot some
frames earlier, or one more spot than the uninterrupted run (every spot of
that run is found, at its place). Not resumed: the refined blinking states
(``/blinking/segmented`` of the frames after the resume stay provisional), the
drift prediction's history and the rotation smoother (they start again).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from plstream.analysis.camera import CameraModel
from plstream.analysis.result_file import FrameRecord, ResultFileError, layout
from plstream.config import Settings

__all__ = ["AnalyzerState", "ResumePoint", "iter_saved_rows", "read_resume_point"]

_BLOCK_ROWS = 4096
_GAUGE_FRAMES = 24  # the analyzer's first rows come out together once the reference offset is settled
OUTSIDE_PX = -1.0e4
"""Where a spot whose position was never written is put: outside every frame, never measured again."""


@dataclass(frozen=True)
class AnalyzerState:
    """What :meth:`~plstream.analysis.analyzer.StreamingAnalyzer.restore` needs (S spots, frames 0..frames-1 done).

    Attributes
    ----------
    frames : int
        Frames analyzed; the next one gets index ``frames``.
    spots_xy : (S, 2) float64
        Reference positions, px.
    spots_weight : (S,) float64
        Refinement weights (sum of 1/variance, 1/px^2).
    spots_first_frame : (S,) int64
    drift_xy : (2,) float64
        Drift of the last frame, px.
    mean_image : (H, W) float32 or None
        Drift-corrected mean, photons/px/frame; None: none was saved, the
        running mean starts again from the next frame.
    mean_shifts : dict of (int, int) to int
        How many frames were added to the mean at each whole-pixel shift (dx, dy).
    psf_sigma_px : float
    warm : (S, 5) float64
        The last fits (x, y, photons, sigma, background), NaN where none succeeded.
    last_background : (S,) float64
        Each spot's last photometric background, photons/px.
    on_level : (S,) float64
        Each spot's ON level, photons (NaN: never ON yet).
    method_counts : dict
        Drift methods used so far.
    """

    frames: int
    spots_xy: np.ndarray
    spots_weight: np.ndarray
    spots_first_frame: np.ndarray
    drift_xy: np.ndarray
    mean_image: np.ndarray | None
    mean_shifts: dict[tuple[int, int], int]
    psf_sigma_px: float
    warm: np.ndarray
    last_background: np.ndarray
    on_level: np.ndarray
    method_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted analysis goes on, and with what state.

    Attributes
    ----------
    path : Path
        The result file (closed: not live, not crashed-and-unrecovered).
    frames : int
        Rows in the file; the resumed analysis appends from row ``frames``.
    next_seq : int
        The first source frame to analyze: one after the last committed ``seq``.
    shape : (int, int)
        Frame shape of the run.
    source : dict
        The run's source description (``source_json``).
    camera : CameraModel
        The camera model the run used.
    previous_status : str
    previous_summary : dict
    gaps : list of (int, int)
        Gaps recorded before the resume.
    analyzer : AnalyzerState
    """

    path: Path
    frames: int
    next_seq: int
    shape: tuple[int, int]
    source: dict[str, Any]
    camera: CameraModel
    previous_status: str
    previous_summary: dict[str, Any]
    gaps: list[tuple[int, int]]
    analyzer: AnalyzerState

    def describe(self) -> str:
        return (
            f"resuming {self.path} (status {self.previous_status}) at frame {self.next_seq}: "
            f"{self.frames} frames and {len(self.analyzer.spots_xy)} spots kept"
        )


def _json(attrs: Any, key: str) -> dict[str, Any]:
    try:
        value = json.loads(attrs.get(key, "") or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_resume_point(path: str | Path, settings: Settings) -> ResumePoint:
    """Rebuild the analysis state at the end of a closed result file (see the module docstring).

    Parameters
    ----------
    path : path
        A result file that is closed (``interrupted``, ``error``, ``crashed`` after ``plstream recover``).
    settings : Settings
        The settings of the resumed analysis (normally the file's own ``settings_json``).

    Raises
    ------
    ResultFileError
        The file cannot be resumed: still live or crashed (recover it first), complete, or too short.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ResultFileError(
            f"{path} cannot be resumed as it is ({exc}); if its writer crashed, run 'plstream recover {path}' first"
        ) from None
    with f:
        attrs = f.attrs
        status = str(attrs.get("status", "running"))
        if status == "complete":
            raise ResultFileError(f"{path} is complete; there is nothing to resume")
        if status == "running" or "closed_utc" not in attrs:
            raise ResultFileError(f"{path} was not closed; run 'plstream recover {path}' first")
        commit = f[layout.COMMIT_PATH][()]
        t, s = int(commit["frames"]), int(commit["spots"])
        if t < _GAUGE_FRAMES:
            raise ResultFileError(f"{path} holds only {t} frames; start it again instead of resuming")
        if f["/frames/seq"].shape[0] != t or (s and f["/traces/intensity"].shape[1] != s):
            raise ResultFileError(f"{path} holds rows its commit record does not count; run 'plstream recover' first")
        summary = _json(attrs, "summary_json")
        source = _json(attrs, "source_json")
        camera_dict = _json(attrs, "camera_json")
        try:
            camera = CameraModel(
                offset_adu=float(camera_dict["offset_adu"]),
                gain_adu_per_e=float(camera_dict["gain_adu_per_e"]),
                read_noise_e=float(camera_dict["read_noise_e"]),
                origin=dict(camera_dict.get("origin", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultFileError(f"{path} has no usable camera model (camera_json): {exc}") from None
        seq = f["/frames/seq"]
        drift = f["/drift/xy"][:]
        mean = f["/images/mean"][()] if "/images/mean" in f else None
        shape = tuple(int(n) for n in (mean.shape if mean is not None else source.get("shape", (0, 0))))
        if status == layout.RECOVERED_STATUS or (mean is not None and not np.isfinite(mean).all()):
            # After a crash the saved mean holds an unknown number of frames (it is written every 0.5 s, and
            # one of too few frames taken for many finds hundreds of false spots): the mean starts afresh.
            mean = None
        next_seq = int(seq[t - 1]) + 1
        # Frames missing after the last analyzed one are not lost: the resumed stream sends them again.
        gaps = [
            (int(a), min(int(b), next_seq - 1)) for a, b in f["/stream/gaps"][: int(commit["gaps"])] if a < next_seq
        ]
        state = _analyzer_state(f, t, s, drift, mean, settings, summary, closed=status != layout.RECOVERED_STATUS)
        return ResumePoint(
            path=path,
            frames=t,
            next_seq=next_seq,
            shape=(shape[0], shape[1]),
            source=source,
            camera=camera,
            previous_status=status,
            previous_summary=summary,
            gaps=gaps,
            analyzer=state,
        )


def _analyzer_state(
    f: h5py.File,
    t: int,
    s: int,
    drift: np.ndarray,
    mean: np.ndarray | None,
    settings: Settings,
    summary: dict[str, Any],
    *,
    closed: bool,
) -> AnalyzerState:
    """The analyzer's state after ``t`` frames; ``closed``: the writer closed the file (its spot table is final)."""
    blink = settings.blinking
    weight = np.zeros(s)
    sum_xy = np.zeros((s, 2))
    sigmas: list[np.ndarray] = []
    on_level = np.full(s, np.nan)
    for start in range(0, t, _BLOCK_ROWS):
        stop = min(t, start + _BLOCK_ROWS)
        rows = slice(start, stop)
        success = f["/fits/success"][rows, :s] == 1
        unc = f["/fits/uncertainty"][rows, :s].astype(np.float64)
        w = np.where(success & np.isfinite(unc) & (unc > 0), 1.0 / np.where(unc > 0, unc, 1.0) ** 2, 0.0)
        weight += w.sum(axis=0)
        d = drift[rows]
        fx = np.nan_to_num(f["/fits/x"][rows, :s] - d[:, :1])
        fy = np.nan_to_num(f["/fits/y"][rows, :s] - d[:, 1:])
        sum_xy[:, 0] += (w * fx).sum(axis=0)
        sum_xy[:, 1] += (w * fy).sum(axis=0)
        sigma = f["/fits/sigma"][rows, :s]
        sigmas.append(sigma[success & np.isfinite(sigma)])
        intensity = f["/traces/intensity"][rows, :s].astype(np.float64)
        state = f["/blinking/state"][rows, :s]
        for row in range(stop - start):  # each spot's ON level follows its ON intensities, as the classifier did
            on = state[row] == 1
            if not on.any():
                continue
            value, level = intensity[row, on], on_level[on]
            unknown = ~np.isfinite(level)
            rate = np.where(value > level, blink.level_rate_up, blink.level_rate_down)
            on_level[on] = np.where(unknown, value, level + rate * (value - level))
    xy = np.column_stack([f["/spots/x"][:s], f["/spots/y"][:s]]).astype(np.float64)
    # The table of a crashed run can be older than its last rows (even older than the reference offset
    # settled at frame 24): the inverse-variance mean of the drift-corrected fits is closer then.
    stale = ~np.isfinite(xy).all(axis=1) if closed else np.ones(s, dtype=bool)
    fitted = weight > 0
    xy[stale & fitted] = sum_xy[stale & fitted] / weight[stale & fitted, None]
    xy[~np.isfinite(xy).all(axis=1)] = OUTSIDE_PX  # never fitted, never saved: not measured again
    last = t - 1
    ok = f["/fits/success"][last, :s] == 1
    warm = np.column_stack(
        [f[name][last, :s].astype(np.float64) for name in ("/fits/x", "/fits/y", "/fits/amplitude", "/fits/sigma")]
        + [f["/fits/background"][last, :s].astype(np.float64)]
    )
    warm[~ok] = np.nan
    psf_sigma = summary.get("psf_sigma_px") or settings.psf.sigma_px
    if not psf_sigma:
        fitted_sigmas = np.concatenate(sigmas) if sigmas else np.zeros(0)
        psf_sigma = float(np.median(fitted_sigmas)) if fitted_sigmas.size else settings.psf.initial_sigma_px
    predicted = np.vstack([np.zeros((1, 2)), drift[: t - 1]])  # frame k joined the mean at frame k-1's drift
    shifts = Counter((int(x), int(y)) for x, y in np.rint(predicted))
    methods = summary.get("drift_methods")
    return AnalyzerState(
        frames=t,
        spots_xy=xy,
        spots_weight=weight,
        spots_first_frame=f["/spots/first_frame"][:s].astype(np.int64),
        drift_xy=np.asarray(drift[last], dtype=np.float64),
        mean_image=mean,
        mean_shifts=dict(shifts),
        psf_sigma_px=float(psf_sigma),
        warm=warm,
        last_background=f["/traces/background"][last, :s].astype(np.float64),
        on_level=on_level,
        method_counts={str(k): int(v) for k, v in methods.items()} if isinstance(methods, dict) else {},
    )


def iter_saved_rows(path: Path, frames: int) -> Iterator[FrameRecord]:
    """Rows ``0 .. frames-1`` of a closed result file as :class:`FrameRecord` (e.g. to refill a live view)."""
    with h5py.File(path, "r") as f:
        present = [spec for spec in layout.FRAME_DATASETS if spec.path in f]
        first = f["/spots/first_frame"][:]
        for start in range(0, frames, _BLOCK_ROWS):
            stop = min(frames, start + _BLOCK_ROWS)
            block = {spec.field: f[spec.path][start:stop] for spec in present}
            for row in range(stop - start):
                t = start + row
                n = int(np.count_nonzero((first >= 0) & (first <= t)))
                values = {
                    spec.field: (block[spec.field][row, :n] if spec.per_spot else block[spec.field][row])
                    for spec in present
                }
                yield FrameRecord(
                    index=t,
                    seq=int(values.pop("seq")),
                    timestamp=float(values.pop("timestamp")),
                    camera_frame_id=int(values.pop("camera_frame_id", -1)),
                    **values,
                )
