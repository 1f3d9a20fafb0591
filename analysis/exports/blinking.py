"""``plstream export blinking``: per-spot blinking figures, a summary CSV, and the ensemble figure.

For each spot (``blinking_spot_{N}.png``, the trace extractor's layout): the
trace coloured by refined state with the ON/OFF thresholds and the levels;
ON, OFF and GRAY dwell-time histograms with mean and median; log-log
densities of the ON and OFF dwells with the power laws fitted; and the state
fractions. ``blinking_summary.csv``: one row per spot (the columns of
``/blinking/spot_stats``, plus position and times in seconds).
``blinking_ensemble.png``: the ensemble ON and OFF dwell-time densities and
survival functions on log-log axes with the fitted models and exponents.
Works on a finished result and on one still being written (its final states
so far).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from plstream.analysis.exports._common import ExportError, Progress, atomic_output
from plstream.analysis.exports._figures import STATE_COLORS, STATE_NAMES, new_figure, save_png
from plstream.analysis.intermittency import DwellFit, DwellTable, blinking_of, log_binned_density
from plstream.analysis.intermittency.fits import kaplan_meier
from plstream.analysis.intermittency.from_results import BlinkingOfRun
from plstream.analysis.result_file.layout import SPOT_STATS_COLUMNS

__all__ = ["ensemble_figure", "export_blinking", "spot_figure", "summary_table"]


def summary_table(run: BlinkingOfRun) -> pd.DataFrame:
    """One row per spot: ID, position, the ``/blinking/spot_stats`` columns, mean dwells in seconds."""
    r = run.results
    table = pd.DataFrame(run.summary.spot_stats, columns=list(SPOT_STATS_COLUMNS))
    table.insert(0, "spot_id", np.arange(r.n_spots))
    table.insert(1, "x", r.spots_x)
    table.insert(2, "y", r.spots_y)
    dt = r.frame_interval_s
    for name in ("on", "off", "gray"):
        table[f"mean_{name}_s"] = table[f"mean_{name}_frames"] * dt if dt else np.nan
    table["signal"] = run.signal_name
    return table


def _legend(ax: Axes, **kwargs: object) -> None:
    """A legend when something in ``ax`` has a label (matplotlib warns otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _fit_lines(ax: Axes, fit: DwellFit | None, complete: np.ndarray, colour: str, dt: float) -> None:
    """The fitted power law (and truncated form, when best) over the density of ``complete`` dwells."""
    if fit is None or len(complete) == 0:
        return
    frac = np.count_nonzero(complete >= fit.t_min) / len(complete)
    t_max = float(complete.max())
    t = np.geomspace(fit.t_min, max(t_max, fit.t_min * 2), 100)
    x0 = fit.t_min - 0.5
    a = fit.alpha
    pl = frac * (a - 1) / x0 * (t / x0) ** (-a)
    ax.plot(t * dt, pl / dt, color=colour, lw=1.6, label=f"power law α = {a:.2f} ± {fit.alpha_error:.2f}")
    tpl = fit.models.get("truncated_power_law")
    if tpl is not None and fit.best == "truncated_power_law":
        ta, tc = tpl.params["alpha"], tpl.params["tau_c_frames"]
        shape = t ** (-ta) * np.exp(-t / tc)
        norm = pl[0] / shape[0]
        ax.plot(
            t * dt, norm * shape / dt, color=colour, lw=1.0, ls="--", label=f"truncated: α {ta:.2f}, τc {tc * dt:.3g}"
        )
    ax.axvline(fit.t_min * dt, color=colour, lw=0.6, ls=":")


def _time_unit(run: BlinkingOfRun) -> tuple[float, str]:
    dt = run.results.frame_interval_s
    return (dt, "s") if dt else (1.0, "frames")


def ensemble_figure(run: BlinkingOfRun, path: Path) -> Path:
    """The ensemble ON and OFF dwell-time densities and survival functions, log-log, with the fits."""
    dt, unit = _time_unit(run)
    s = run.summary
    fig = new_figure(11.0, 7.6)
    axes = fig.subplots(2, 2)
    for col, (state, fit) in enumerate(((1, s.fit_on), (0, s.fit_off))):
        complete, censored = s.dwells.of_state(state)
        colour = STATE_COLORS[state]
        ax = axes[0, col]
        if len(complete):
            x, d, _ = log_binned_density(complete)
            ax.loglog(x * dt, d / dt, "o", color=colour, ms=4, label=f"{len(complete)} complete dwells")
            _fit_lines(ax, fit, complete, "black", dt)
        ax.set_xlabel(f"{STATE_NAMES[state]} time ({unit})")
        ax.set_ylabel(f"probability density (1/{unit})")
        ax.set_title(f"{STATE_NAMES[state]} dwell times, all spots")
        _legend(ax, fontsize=7, loc="lower left")
        ax = axes[1, col]
        if len(complete):
            k, surv = kaplan_meier(complete, censored)
            ax.loglog(
                k * dt, surv, drawstyle="steps-post", color=colour, label=f"Kaplan-Meier ({len(censored)} censored)"
            )
            if fit is not None:
                t = np.geomspace(fit.t_min, k.max() + 1, 100)
                s_tmin = float(np.interp(fit.t_min, k, surv))
                ax.loglog(
                    t * dt,
                    s_tmin * ((t - 0.5) / (fit.t_min - 0.5)) ** (1 - fit.alpha),
                    color="black",
                    lw=1.4,
                    label=f"power law, t ≥ {fit.t_min * dt:.3g} {unit}: α = {fit.alpha:.2f} ± {fit.alpha_error:.2f}",
                )
        ax.set_xlabel(f"{STATE_NAMES[state]} time ({unit})")
        ax.set_ylabel("P(dwell ≥ t)")
        best = f"; best model (AIC): {fit.best.replace('_', ' ')}" if fit else ""
        ax.set_title(f"survival{best}", fontsize=9)
        _legend(ax, fontsize=7, loc="lower left")
    r = run.results
    note = "" if r.status == "complete" else f" ({r.status}: {r.n_frames} frames so far)"
    fig.suptitle(f"{r.path.name}: {r.n_spots} spots, {r.n_frames} frames{note}", fontsize=10)
    return save_png(fig, path, dpi=100)


def _histogram(ax: Axes, lengths: np.ndarray, state: int, dt: float, unit: str) -> None:
    name = STATE_NAMES[state]
    if len(lengths) == 0:
        ax.text(0.5, 0.5, f"no complete {name} dwells", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    else:
        top = int(lengths.max())
        edges = np.arange(0.5, top + 1.5) * dt if top <= 50 else np.linspace(0.5, top + 0.5, 31) * dt
        ax.hist(lengths * dt, bins=list(edges), color=STATE_COLORS[state], alpha=0.8)
        ax.axvline(lengths.mean() * dt, color="black", lw=1, label=f"mean {lengths.mean() * dt:.3g}")
        ax.axvline(np.median(lengths) * dt, color="black", lw=1, ls="--", label=f"median {np.median(lengths) * dt:.3g}")
        _legend(ax, fontsize=6)
    ax.set_title(f"{name} dwells ({len(lengths)})", fontsize=8)
    ax.set_xlabel(f"{unit}", fontsize=7)
    ax.tick_params(labelsize=6)


def spot_figure(run: BlinkingOfRun, spot: int, path: Path) -> Path:
    """One spot's trace with states, thresholds and levels, dwell histograms, log-log densities and fractions."""
    dt, unit = _time_unit(run)
    r = run.results
    s = run.summary
    mine = s.dwells.spot == spot
    table = DwellTable(*(getattr(s.dwells, f)[mine] for f in DwellTable.__dataclass_fields__))
    fig = new_figure(11.0, 8.0)
    grid = fig.add_gridspec(3, 4)
    ax = fig.add_subplot(grid[0, :])
    t = np.asarray(r.seq, dtype=float) * dt
    y = run.signal[:, spot]
    st = run.states[:, spot]
    ax.plot(t, y, color="#cccccc", lw=0.5, zorder=1)
    for state in (0, 2, 1):
        sel = st == state
        ax.scatter(t[sel], y[sel], s=3, color=STATE_COLORS[state], label=STATE_NAMES[state], zorder=2)
    off_thr, on_thr = run.thresholds
    for value, style, label in ((on_thr[spot], "--", "ON threshold"), (off_thr[spot], ":", "OFF threshold")):
        if np.isfinite(value):
            ax.axhline(value, color="black", lw=0.8, ls=style, label=label)
    for k, state in ((1, 1), (0, 0), (2, 2)):
        level = run.levels[spot, k]
        if np.isfinite(level):
            ax.axhline(level, color=STATE_COLORS[state], lw=0.8, alpha=0.7)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(f"{run.signal_name} intensity (photons)")
    _legend(ax, fontsize=7, ncol=5, loc="upper right", markerscale=3)
    ax.set_title(f"spot_{spot} at ({r.spots_x[spot]:.1f}, {r.spots_y[spot]:.1f}) px", fontsize=9)
    for col, state in enumerate((1, 0, 2)):
        lengths = table.length[(table.state == state) & table.complete]
        _histogram(fig.add_subplot(grid[1, col]), lengths, state, dt, unit)
    ax = fig.add_subplot(grid[1, 3])
    row = s.spot_stats[spot]
    names = list(SPOT_STATS_COLUMNS)
    fractions = [row[names.index(f"{n}_fraction")] for n in ("on", "off", "gray")]
    fractions = [0.0 if not np.isfinite(f) else f for f in fractions]
    shown = [(f, n, STATE_COLORS[st]) for f, n, st in zip(fractions, ("ON", "OFF", "GRAY"), (1, 0, 2)) if f > 0]
    if shown:
        ax.pie(
            [f for f, _, _ in shown],
            labels=[f"{n} {f:.0%}" for f, n, _ in shown],
            colors=[c for _, _, c in shown],
            textprops={"fontsize": 7},
        )
    ax.set_title("state fractions", fontsize=8)
    for col, state in enumerate((1, 0)):
        ax = fig.add_subplot(grid[2, 2 * col : 2 * col + 2])
        complete, _ = table.of_state(state)
        if len(complete):
            x, d, _ = log_binned_density(complete)
            ax.loglog(x * dt, d / dt, "o", color=STATE_COLORS[state], ms=4, label=f"this spot ({len(complete)})")
        ensemble = s.fit_on if state == 1 else s.fit_off
        if ensemble is not None and len(complete):
            alpha_spot = row[names.index(f"alpha_{'on' if state == 1 else 'off'}")]
            _fit_lines(ax, ensemble, complete, "black", dt)
            if np.isfinite(alpha_spot):
                ax.set_title(f"{STATE_NAMES[state]}: this spot's α = {alpha_spot:.2f} (line: ensemble fit)", fontsize=8)
            else:
                ax.set_title(f"{STATE_NAMES[state]} (line: ensemble fit)", fontsize=8)
        ax.set_xlabel(f"{STATE_NAMES[state]} time ({unit})", fontsize=7)
        ax.set_ylabel(f"density (1/{unit})", fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=6)
        _legend(ax, fontsize=6, loc="lower left")
    return save_png(fig, path, dpi=90)


def export_blinking(
    result: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spots: Iterable[int] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``blinking_summary.csv``, ``blinking_ensemble.png`` and ``blinking_spot_{N}.png`` into ``out_dir``.

    ``spots`` chooses the per-spot figures (default: every spot; ``[]``: none).
    Returns the files written.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run = blinking_of(result)
    written = []
    csv_path = folder / "blinking_summary.csv"
    with atomic_output(csv_path) as partial:
        summary_table(run).to_csv(partial, index=False)
    written.append(csv_path)
    written.append(ensemble_figure(run, folder / "blinking_ensemble.png"))
    chosen = list(range(run.results.n_spots)) if spots is None else [int(i) for i in spots]
    for k, spot in enumerate(chosen):
        if not 0 <= spot < run.results.n_spots:
            raise ExportError(f"spot {spot} is not in {result} (spots 0..{run.results.n_spots - 1})")
        written.append(spot_figure(run, spot, folder / f"blinking_spot_{spot}.png"))
        if progress is not None:
            progress(k + 1, len(chosen))
    return written
