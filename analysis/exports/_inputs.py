"""What every export needs from a result file: its movie, its signal model, its drift, its particles."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from plstream.analysis.camera import CameraModel
from plstream.analysis.exports._common import ExportError
from plstream.analysis.result_file import Results
from plstream.analysis.signal import SignalModel

__all__ = ["drift_of", "movie_of", "particle_ids", "psf_sigma_of", "signal_of"]

# A spot whose fitted width is this far from the PSF's is not a single compact particle (an aggregate, a streak).
_MIN_WIDTH, _MAX_WIDTH = 0.6, 1.6


def movie_of(results: Results, movie: str | None) -> Path:
    """The movie to export from: ``--movie``, else the file or folder the run replayed (``source_json``)."""
    if movie:
        path = Path(movie)
    else:
        recorded = results.source.get("path")
        if not recorded:
            raise ExportError(
                f"{results.path} does not say which movie it analysed (a live run); give it with --movie MOVIE"
            )
        path = Path(str(recorded))
    if not path.exists():
        raise ExportError(f"movie {path} not found; give the analysed movie with --movie")
    return path


def signal_of(results: Results) -> SignalModel:
    """The run's signal model (raw ADU -> working units), from ``analysis_json`` or, for older files, the camera."""
    described = results.analysis.get("signal")
    if described:
        return SignalModel.from_dict(described)
    camera = results.camera
    try:
        model = CameraModel(float(camera["offset_adu"]), float(camera["gain_adu_per_e"]), float(camera["read_noise_e"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{results.path} has no usable camera model or signal model ({exc})") from None
    return SignalModel.from_camera(model)


def psf_sigma_of(results: Results) -> float:
    """The PSF width of the run, px."""
    sigma = results.summary.get("psf_sigma_px")
    if isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0:
        return float(sigma)
    fitted = np.asarray(results.fit_sigma, dtype=np.float64)
    fitted = fitted[np.isfinite(fitted)]
    return float(np.median(fitted)) if fitted.size else 1.5


def drift_of(results: Results) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(T, 2) translation, (T,) rotation (0 where unknown) and the rotation centre of the run."""
    rotation = np.nan_to_num(np.asarray(results.drift_rotation, dtype=np.float64), nan=0.0)
    centre = results.rotation_center_xy
    if centre is None or not all(math.isfinite(c) for c in centre):
        mean = results.mean_image
        rows, cols = mean.shape if mean is not None else (0, 0)
        centre = ((cols - 1) / 2.0, (rows - 1) / 2.0)
    return np.asarray(results.drift_xy, dtype=np.float64), rotation, centre


def _parse_ids(text: str, n_spots: int) -> list[int]:
    try:
        ids = sorted({int(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v.strip()})
    except ValueError:
        raise ExportError(f"--particles {text!r}: give spot IDs separated by commas, e.g. 0,4,7") from None
    bad = [i for i in ids if not 0 <= i < n_spots]
    if bad:
        raise ExportError(f"--particles: spot IDs {bad} do not exist (the result has spots 0..{n_spots - 1})")
    return ids


def particle_ids(results: Results, chosen: str | None, limit: int) -> tuple[list[int], str]:
    """The spots a report follows, and why these.

    ``chosen`` (spot IDs) wins; else the particles the user picked for the
    drift; else the spots fitted in most frames, brightest first, at most ``limit``.
    """
    n = results.n_spots
    if chosen:
        return _parse_ids(chosen, n), "chosen with --particles"
    refs: dict[str, Any] = results.analysis.get("drift_references") or {}
    if refs.get("ids"):
        return [i for i in refs["ids"] if 0 <= i < n], f"the drift's reference particles ({refs.get('source')})"
    if refs.get("boxes"):
        return list(range(min(len(refs["boxes"]), n))), f"the drift's reference particles ({refs.get('source')})"
    success = np.asarray(results.fit_success, dtype=np.float64)
    if n == 0 or success.size == 0:
        return [], "no spots"
    frames = success.shape[0]
    needed = 1.0 if frames <= 10 else 0.8
    ok = success > 0
    rate = ok.mean(axis=0)
    sigma = psf_sigma_of(results)
    width = _column_median(np.asarray(results.fit_sigma, dtype=np.float64), ok)
    precision = _column_median(np.asarray(results.fit_uncertainty, dtype=np.float64), ok)
    compact = (width >= _MIN_WIDTH * sigma) & (width <= _MAX_WIDTH * sigma)
    # well inside every frame: the drift never takes their fit region over an edge
    drift = np.asarray(results.drift_xy, dtype=np.float64)
    reach = float(np.nanmax(np.abs(drift))) if np.isfinite(drift).any() else 0.0
    margin = reach + 3.0 * sigma + 2.0
    mean = results.mean_image
    rows, cols = mean.shape if mean is not None else (np.inf, np.inf)
    x, y = np.asarray(results.spots_x), np.asarray(results.spots_y)
    inside = (x >= margin) & (y >= margin) & (x <= cols - 1 - margin) & (y <= rows - 1 - margin)
    candidates = np.flatnonzero((rate >= needed - 1e-9) & compact & inside & np.isfinite(precision))
    order = candidates[np.argsort(precision[candidates], kind="stable")]
    return (
        [int(i) for i in order[:limit]],
        f"the {min(limit, order.size)} most precisely fitted compact spots away from the edges "
        f"(fitted in {needed:.0%} of the frames)",
    )


def _column_median(values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Median of each column over the rows where ``use`` (NaN for a column with none)."""
    out = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        column = values[use[:, j], j]
        column = column[np.isfinite(column)]
        if column.size:
            out[j] = float(np.median(column))
    return out
