"""Score a result file against the simulator's ground truth.

The metrics are the project's accuracy bars: spot recall and precision,
drift RMSE, localization RMSE relative to the reported CRLB on fully-on
frames, correlation of each trace with the true photon counts, and on/off
accuracy. Result rows are mapped to truth frames by their sequence number,
so gaps in a stream are scored correctly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ACCEPTANCE_BARS", "Evaluation", "evaluate"]

#: The acceptance bars of the foundation issue: metric -> (comparison, bound).
ACCEPTANCE_BARS: dict[str, tuple[str, float]] = {
    "frames_analyzed_fraction": (">=", 1.0),
    "recall": (">=", 0.98),
    "precision": (">=", 0.98),
    "drift_rmse_px": ("<=", 0.05),
    "localization_rmse_over_crlb": ("<=", 1.5),
    "trace_correlation_median": (">=", 0.98),
    "onoff_accuracy": (">=", 0.95),
}

_FULLY_ON = 0.999


class _Truth(Protocol):
    """What :func:`evaluate` reads of a simulation's truth (read-only: the truth is a frozen dataclass)."""

    @property
    def positions_xy(self) -> np.ndarray: ...  # (E, 2) reference-frame px
    @property
    def drift_xy(self) -> np.ndarray: ...  # (T, 2)
    @property
    def rotation_deg(self) -> np.ndarray: ...  # (T,)
    @property
    def on_fraction(self) -> np.ndarray: ...  # (T, E)
    @property
    def photons(self) -> np.ndarray: ...  # (T, E)

    def positions_in_frame(self, t: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of one analysis against ground truth (units: px, photons, fractions)."""

    n_frames_truth: int
    n_frames_analyzed: int
    frames_analyzed_fraction: float
    n_true: int
    n_found: int
    n_matched: int
    recall: float
    precision: float
    reference_position_rmse_px: float
    drift_rmse_px: float
    drift_max_error_px: float
    n_localizations: int
    localization_rmse_px: float
    crlb_rms_px: float
    localization_rmse_over_crlb: float
    trace_correlation_median: float
    onoff_accuracy: float
    rotation_rmse_deg: float = float("nan")
    rotation_max_error_deg: float = float("nan")
    model_position_rmse_px: float = float("nan")
    model_position_worst_emitter_px: float = float("nan")
    model_position_worst_frame_px: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failures(self, bars: dict[str, tuple[str, float]] = ACCEPTANCE_BARS) -> list[str]:
        """The bars this evaluation misses, as readable lines (empty when all pass)."""
        out = []
        for name, (op, bound) in bars.items():
            value = getattr(self, name)
            ok = value >= bound if op == ">=" else value <= bound
            if not (ok and np.isfinite(value)):
                out.append(f"{name} = {value:.4g} (needs {op} {bound})")
        return out

    def table(self) -> str:
        """A small text table with each metric and, where one exists, its bar."""
        rows = [
            ("frames analyzed / in the movie", f"{self.n_frames_analyzed} / {self.n_frames_truth}", "all"),
            ("spots found / true / matched", f"{self.n_found} / {self.n_true} / {self.n_matched}", ""),
            ("recall", f"{self.recall:.4f}", ">= 0.98"),
            ("precision", f"{self.precision:.4f}", ">= 0.98"),
            ("reference position RMSE (px)", f"{self.reference_position_rmse_px:.4f}", ""),
            ("drift RMSE (px)", f"{self.drift_rmse_px:.4f}", "<= 0.05"),
            ("drift max error (px)", f"{self.drift_max_error_px:.4f}", ""),
            ("localization RMSE, fully-on frames (px)", f"{self.localization_rmse_px:.4f}", ""),
            ("reported CRLB, rms (px)", f"{self.crlb_rms_px:.4f}", ""),
            ("localization RMSE / CRLB", f"{self.localization_rmse_over_crlb:.3f}", "<= 1.5"),
            ("localizations scored", f"{self.n_localizations}", ""),
            ("trace correlation, median", f"{self.trace_correlation_median:.4f}", ">= 0.98"),
            ("on/off accuracy", f"{self.onoff_accuracy:.4f}", ">= 0.95"),
            ("rotation RMSE (deg)", f"{self.rotation_rmse_deg:.5f}", ""),
            ("rotation max error (deg)", f"{self.rotation_max_error_deg:.5f}", ""),
            ("drift model: position RMSE (px)", f"{self.model_position_rmse_px:.4f}", ""),
            ("  worst emitter, RMS over frames (px)", f"{self.model_position_worst_emitter_px:.4f}", ""),
            ("  worst frame, RMS over emitters (px)", f"{self.model_position_worst_frame_px:.4f}", ""),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"  {name:<{width}}  {value:>14}  {bar}".rstrip() for name, value, bar in rows)


def _match(found: np.ndarray, true: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching within ``radius`` minimizing total distance (Hungarian)."""
    if len(found) == 0 or len(true) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    distance = np.hypot(found[:, None, 0] - true[None, :, 0], found[:, None, 1] - true[None, :, 1])
    cost = np.where(distance <= radius, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    keep = distance[rows, cols] <= radius
    return rows[keep], cols[keep]


def _true_positions(truth: _Truth, frames: np.ndarray) -> np.ndarray:
    """(T, E, 2) true emitter positions in each analyzed frame's coordinates."""
    if not np.any(truth.rotation_deg[frames]):
        return truth.positions_xy[None, :, :] + truth.drift_xy[frames][:, None, :]
    return np.stack([truth.positions_in_frame(int(t)) for t in frames])


def evaluate(results: Any, truth: _Truth, *, match_radius_px: float = 1.0) -> Evaluation:
    """Compare analysis results with the simulator's truth.

    Parameters
    ----------
    results : Results
        As returned by :func:`plstream.analysis.result_file.load_results`.
    truth : SimulationTruth
        The simulator's truth for the same movie.
    match_radius_px : float
        A found spot matches a true emitter within this distance (reference frame).

    Returns
    -------
    Evaluation
    """
    frames = np.asarray(results.seq, dtype=np.int64)
    if frames.size and frames.max() >= truth.drift_xy.shape[0]:
        raise ValueError("the result file has frames the truth does not describe; is it the right truth file?")
    found = np.column_stack([results.spots_x, results.spots_y]) if len(results.spots_x) else np.zeros((0, 2))
    true = np.asarray(truth.positions_xy)
    rows, cols = _match(found, true, match_radius_px)
    n_found, n_true, n_matched = len(found), len(true), len(rows)
    recall = n_matched / n_true if n_true else float("nan")
    precision = n_matched / n_found if n_found else float("nan")
    ref_rmse = float(np.sqrt(np.mean(np.sum((found[rows] - true[cols]) ** 2, axis=1)))) if n_matched else np.nan

    drift_err = np.asarray(results.drift_xy) - truth.drift_xy[frames]
    drift_norm = np.hypot(drift_err[:, 0], drift_err[:, 1]) if len(frames) else np.zeros(0)
    drift_rmse = float(np.sqrt(np.mean(drift_norm**2))) if len(frames) else np.nan
    drift_max = float(drift_norm.max()) if len(frames) else np.nan

    on_fraction = truth.on_fraction[frames][:, cols]  # (T, M)
    photons = truth.photons[frames][:, cols]
    true_xy = _true_positions(truth, frames)[:, cols, :]  # (T, M, 2)
    fit_x = np.asarray(results.fit_x)[:, rows]
    fit_y = np.asarray(results.fit_y)[:, rows]
    sigma = np.asarray(results.fit_uncertainty)[:, rows]
    scored = (on_fraction >= _FULLY_ON) & np.isfinite(fit_x) & np.isfinite(fit_y) & np.isfinite(sigma)
    n_loc = int(np.count_nonzero(scored))
    if n_loc:
        err2 = ((fit_x - true_xy[..., 0]) ** 2 + (fit_y - true_xy[..., 1]) ** 2)[scored] / 2.0
        loc_rmse = float(np.sqrt(np.mean(err2)))
        crlb_rms = float(np.sqrt(np.mean(sigma[scored].astype(np.float64) ** 2)))
        ratio = loc_rmse / crlb_rms
    else:
        loc_rmse = crlb_rms = ratio = float("nan")

    intensity = np.asarray(results.intensity)[:, rows]
    correlations = []
    for k in range(n_matched):
        valid = np.isfinite(intensity[:, k])
        a, b = intensity[valid, k], photons[valid, k]
        if valid.sum() >= 3 and a.std() > 0 and b.std() > 0:
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
    corr_median = float(np.median(correlations)) if correlations else float("nan")

    state = np.asarray(results.state)[:, rows]
    measured = state >= 0
    if measured.any():
        accuracy = float(np.mean((state[measured] == 1) == (on_fraction[measured] >= 0.5)))
    else:
        accuracy = float("nan")

    rotation = getattr(results, "drift_rotation", None)
    if rotation is not None and len(frames):
        rotation_error = np.degrees(np.asarray(rotation, dtype=np.float64)) - truth.rotation_deg[frames]
        rotation_rmse = float(np.sqrt(np.mean(rotation_error**2)))
        rotation_max = float(np.abs(rotation_error).max())
    else:
        rotation_rmse = rotation_max = float("nan")
    model = _model_position_errors(results, truth, frames, rows, cols)

    n_movie = int(truth.drift_xy.shape[0])
    n_analyzed = int(np.unique(frames).size)
    return Evaluation(
        n_frames_truth=n_movie,
        n_frames_analyzed=n_analyzed,
        frames_analyzed_fraction=n_analyzed / n_movie if n_movie else float("nan"),
        n_true=n_true,
        n_found=n_found,
        n_matched=n_matched,
        recall=recall,
        precision=precision,
        reference_position_rmse_px=ref_rmse,
        drift_rmse_px=drift_rmse,
        drift_max_error_px=drift_max,
        n_localizations=n_loc,
        localization_rmse_px=loc_rmse,
        crlb_rms_px=crlb_rms,
        localization_rmse_over_crlb=ratio,
        trace_correlation_median=corr_median,
        onoff_accuracy=accuracy,
        rotation_rmse_deg=rotation_rmse,
        rotation_max_error_deg=rotation_max,
        model_position_rmse_px=model[0],
        model_position_worst_emitter_px=model[1],
        model_position_worst_frame_px=model[2],
    )


def _model_position_errors(
    results: Any, truth: _Truth, frames: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[float, float, float]:
    """How well the drift model places the emitters, model-free.

    Each matched spot's reference position (``/spots``) is carried into every
    frame by the result's rigid transform (``/drift/xy``, ``/drift/rotation``
    about its centre) and compared with the emitter's true position there;
    the mean error over all frames and emitters (a constant offset of the
    whole reference, which no measurement can see) is removed. Returns the
    RMS over everything, the worst emitter's RMS over frames and the worst
    frame's RMS over emitters (px).
    """
    if len(rows) == 0 or len(frames) == 0:
        return float("nan"), float("nan"), float("nan")
    ref = np.column_stack([results.spots_x, results.spots_y])[rows]
    height, width = np.asarray(getattr(truth, "background_map", np.zeros((0, 0)))).shape or (0, 0)
    centre = getattr(results, "rotation_center_xy", None)
    if centre is None:
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    theta = np.asarray(getattr(results, "drift_rotation", np.zeros(len(frames))), dtype=np.float64)
    drift = np.asarray(results.drift_xy, dtype=np.float64)
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    u, v = ref[None, :, 0] - centre[0], ref[None, :, 1] - centre[1]
    predicted = np.stack([c * u - s * v + centre[0], s * u + c * v + centre[1]], axis=-1) + drift[:, None, :]
    error = predicted - _true_positions(truth, frames)[:, cols, :]
    good = np.isfinite(error).all(axis=-1)
    if not good.any():
        return float("nan"), float("nan"), float("nan")
    error = error - error[good].mean(axis=0)
    squared = np.where(good, (error**2).sum(axis=-1), np.nan)
    return (
        float(np.sqrt(np.nanmean(squared))),
        float(np.sqrt(np.nanmax(np.nanmean(squared, axis=0)))),
        float(np.sqrt(np.nanmax(np.nanmean(squared, axis=1)))),
    )
