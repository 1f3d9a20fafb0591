"""``plstream export validation``: how much motion the drift correction left, particle by particle.

The chosen particles (the drift's reference particles, ``--particles``, or
the spots fitted in most frames) are fitted in every frame twice, with the
run's own fitter and signal model: in the original frames (at their reference
positions carried by the drift) and in the aligned frames (at their reference
positions). Each particle's displacement from its first measured position
is its motion: before alignment the drift it saw, after alignment what the
correction left. Per particle: the largest and the root-mean-square motion
before and after, and the reduction ``(max before - max after) / max before``;
overall the same over all particles.

Written into one folder: ``validation.csv`` (one row per frame and
particle), ``validation_summary.csv`` (one row per particle and an ``all``
row), ``particle_<id>.png`` (trajectory before/after, motion against frame)
and ``summary.png`` (all trajectories before and after, motion against frame
and the table), as the image-alignment pipeline's step 5 gives.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plstream.acquire_adapters import open_movie
from plstream.analysis.alignment import ParticleMotion, align_frame, measure_particles, residual_motion
from plstream.analysis.exports import charts
from plstream.analysis.exports._common import ExportError
from plstream.analysis.exports._inputs import drift_of, particle_ids, psf_sigma_of, signal_of
from plstream.analysis.result_file import Results

__all__ = ["ValidationReport", "validate_alignment"]


@dataclass(frozen=True)
class ValidationReport:
    """The numbers of a validation, and the files it wrote.

    ``before``/``after`` are the particles' motions (``ParticleMotion``),
    ``ids`` their spot IDs, ``frames`` the result rows measured.
    """

    ids: list[int]
    why: str
    frames: np.ndarray
    before: ParticleMotion
    after: ParticleMotion
    precision_px: np.ndarray
    folder: Path
    files: list[Path]

    @property
    def reduction_percent(self) -> np.ndarray:
        """Per particle: ``100 (max before - max after) / max before``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * (self.before.max_px - self.after.max_px) / self.before.max_px

    @property
    def overall_reduction_percent(self) -> float:
        """The same for the mean over the particles of their largest motion."""
        b, a = np.nanmean(self.before.max_px), np.nanmean(self.after.max_px)
        return float(100.0 * (b - a) / b) if b > 0 else math.nan

    def table(self) -> list[list[str]]:
        """Header and one row per particle, then the mean: the summary's table."""
        rows = [["particle", "max before (px)", "max after (px)", "rms after (px)", "precision (px)", "reduction"]]
        for k, spot in enumerate(self.ids):
            rows.append(
                [
                    f"spot {spot}",
                    f"{self.before.max_px[k]:.3f}",
                    f"{self.after.max_px[k]:.3f}",
                    f"{self.after.rms_px[k]:.3f}",
                    f"{self.precision_px[k]:.3f}",
                    f"{self.reduction_percent[k]:.1f} %",
                ]
            )
        rows.append(
            [
                "mean",
                f"{np.nanmean(self.before.max_px):.3f}",
                f"{np.nanmean(self.after.max_px):.3f}",
                f"{np.nanmean(self.after.rms_px):.3f}",
                f"{np.nanmean(self.precision_px):.3f}",
                f"{self.overall_reduction_percent:.1f} %",
            ]
        )
        return rows


def _measure(results: Results, movie: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions (T, K, 2) in the original frames and in the aligned ones, the result rows measured, and
    each particle's localization precision (median CRLB standard error on the aligned frames, px)."""
    drift, rotation, centre = drift_of(results)
    signal = signal_of(results)
    sigma = psf_sigma_of(results)
    ref = np.column_stack([results.spots_x, results.spots_y])[ids]
    row_of = {int(seq): t for t, seq in enumerate(np.asarray(results.seq))}
    rows, originals, aligned, predicted = [], [], [], []
    with contextlib.closing(open_movie(movie)) as source:
        for frame in source:
            t = row_of.get(frame.seq)
            if t is None or not np.isfinite(drift[t]).all():
                continue
            c, s = math.cos(rotation[t]), math.sin(rotation[t])
            u, v = ref[:, 0] - centre[0], ref[:, 1] - centre[1]
            predicted.append(np.column_stack([c * u - s * v + centre[0], s * u + c * v + centre[1]]) + drift[t])
            originals.append(frame.data)
            aligned.append(align_frame(frame.data, drift[t], float(rotation[t]), centre))
            rows.append(t)
    if not rows:
        raise ExportError(f"none of the frames of {movie} is in {results.path}; is it the movie that was analysed?")
    before, _ = measure_particles(originals, predicted, signal, sigma_px=sigma)
    after, errors = measure_particles(aligned, [ref] * len(aligned), signal, sigma_px=sigma)
    precision = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan for c in errors.T])
    return before, after, np.asarray(rows), precision


def _write_csv(report: ValidationReport, before_xy: np.ndarray, after_xy: np.ndarray, seq: np.ndarray) -> list[Path]:
    folder = report.folder
    per_frame = folder / "validation.csv"
    with open(per_frame, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            ["frame", "seq", "spot", "x_before_px", "y_before_px", "dx_before_px", "dy_before_px", "motion_before_px"]
            + ["x_after_px", "y_after_px", "dx_after_px", "dy_after_px", "motion_after_px"]
        )
        for i, t in enumerate(report.frames):
            for k, spot in enumerate(report.ids):
                values = []
                for xy, motion in ((before_xy, report.before), (after_xy, report.after)):
                    values += [*xy[i, k], *motion.displacement[i, k], motion.magnitude[i, k]]
                out.writerow([int(t), int(seq[i]), spot, *("" if not np.isfinite(v) else f"{v:.4f}" for v in values)])
    summary = folder / "validation_summary.csv"
    with open(summary, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            ["spot", "frames_measured", "max_before_px", "rms_before_px", "max_after_px", "rms_after_px"]
            + ["precision_px", "reduction_pct"]
        )
        for k, spot in enumerate(report.ids):
            out.writerow(
                [
                    spot,
                    int(report.after.measured[k]),
                    f"{report.before.max_px[k]:.4f}",
                    f"{report.before.rms_px[k]:.4f}",
                    f"{report.after.max_px[k]:.4f}",
                    f"{report.after.rms_px[k]:.4f}",
                    f"{report.precision_px[k]:.4f}",
                    f"{report.reduction_percent[k]:.2f}",
                ]
            )
        out.writerow(
            [
                "all",
                int(report.after.measured.sum()),
                f"{np.nanmean(report.before.max_px):.4f}",
                f"{np.nanmean(report.before.rms_px):.4f}",
                f"{np.nanmean(report.after.max_px):.4f}",
                f"{np.nanmean(report.after.rms_px):.4f}",
                f"{np.nanmean(report.precision_px):.4f}",
                f"{report.overall_reduction_percent:.2f}",
            ]
        )
    return [per_frame, summary]


def _particle_figure(report: ValidationReport, k: int) -> Path:
    spot = report.ids[k]
    canvas = charts.Canvas(1500, 640)
    canvas.text(f"Spot {spot}: drift before and after alignment", 750, 36, scale=0.8, thickness=2, align="centre")
    left = charts.Axes(canvas, 110, 90, 560, 460, title="Trajectory", xlabel="dx (px)", ylabel="dy (px)", equal=True)
    left.plot(report.before.displacement[:, k, 0], report.before.displacement[:, k, 1], charts.RED, "before alignment")
    left.plot(report.after.displacement[:, k, 0], report.after.displacement[:, k, 1], charts.GREEN, "after alignment")
    left.star(0.0, 0.0, charts.BLACK, "start (0, 0)")
    left.draw()
    right = charts.Axes(
        canvas, 860, 90, 580, 460, title="Motion from the first frame", xlabel="frame", ylabel="motion (px)"
    )
    right.plot(report.frames, report.before.magnitude[:, k], charts.RED, "before alignment")
    right.plot(report.frames, report.after.magnitude[:, k], charts.GREEN, "after alignment")
    right.draw()
    lines = [
        f"max before: {report.before.max_px[k]:.3f} px",
        f"max after:  {report.after.max_px[k]:.3f} px (rms {report.after.rms_px[k]:.3f} px)",
        f"localization precision: {report.precision_px[k]:.3f} px",
        f"reduction:  {report.reduction_percent[k]:.1f} %",
    ]
    for i, line in enumerate(lines):
        canvas.text(line, 880, 120 + 22 * i, scale=0.5, color=(0, 90, 0))
    return canvas.save(report.folder / f"particle_{spot}.png")


def _summary_figure(report: ValidationReport) -> Path:
    height = max(1180, 760 + 30 * (len(report.ids) + 2))
    canvas = charts.Canvas(1600, height)
    canvas.text(
        f"Validation of the drift correction: {len(report.ids)} particle{'s' if len(report.ids) != 1 else ''}, "
        f"{report.frames.size} frames",
        800,
        36,
        scale=0.8,
        thickness=2,
        align="centre",
    )
    before = charts.Axes(canvas, 110, 90, 600, 480, title="Before alignment: drift", xlabel="dx (px)", ylabel="dy (px)")
    after = charts.Axes(
        canvas, 900, 90, 600, 480, title="After alignment: what is left", xlabel="dx (px)", ylabel="dy (px)"
    )
    motion = charts.Axes(
        canvas, 110, 700, 600, 420, title="Motion from the first frame", xlabel="frame", ylabel="motion (px)"
    )
    for k, spot in enumerate(report.ids):
        color = charts.COLORS[k % len(charts.COLORS)]
        before.plot(report.before.displacement[:, k, 0], report.before.displacement[:, k, 1], color, f"spot {spot}")
        after.plot(report.after.displacement[:, k, 0], report.after.displacement[:, k, 1], color, f"spot {spot}")
        motion.plot(report.frames, report.before.magnitude[:, k], color, "", dashed=True, thickness=1)
        motion.plot(report.frames, report.after.magnitude[:, k], color, f"spot {spot}")
    for axes in (before, after):
        axes.star(0.0, 0.0, charts.BLACK, "start")
        axes.draw()
    motion.draw()
    canvas.text("dashed: before alignment, solid: after", 110, 1172, scale=0.45)
    canvas.table(report.table(), 780, 720, (120, 140, 135, 130, 130, 110), title="Drift reduction")
    return canvas.save(report.folder / "summary.png")


def validate_alignment(
    results: Results,
    movie: Path,
    folder: Path,
    *,
    particles: str | None = None,
    max_particles: int = 12,
    overwrite: bool = False,
) -> ValidationReport:
    """Measure, write the CSVs and the figures (see the module notes); returns the numbers."""
    ids, why = particle_ids(results, particles, max_particles)
    if not ids:
        raise ExportError(f"{results.path} has no spots to validate the alignment with ({why})")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ExportError(f"{folder} already exists and is not empty; choose another --out or pass --overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    before_xy, after_xy, frames, precision = _measure(results, movie, ids)
    report = ValidationReport(
        ids, why, frames, residual_motion(before_xy), residual_motion(after_xy), precision, folder, []
    )
    files = _write_csv(report, before_xy, after_xy, np.asarray(results.seq)[frames])
    files += [_particle_figure(report, k) for k in range(len(ids))]
    files.append(_summary_figure(report))
    return dataclasses.replace(report, files=files)
