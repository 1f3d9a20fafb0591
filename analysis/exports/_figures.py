"""Matplotlib without pyplot: one Figure per picture, written as PNG (no global state, no display needed)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from plstream.analysis.exports._common import atomic_output

__all__ = ["STATE_COLORS", "new_figure", "save_png"]

#: Colours of the refined states (OFF, ON, GRAY), the same in every figure and in the dashboard.
STATE_COLORS = {0: "#3b6fb6", 1: "#e07b1a", 2: "#8c8c8c"}
STATE_NAMES = {0: "OFF", 1: "ON", 2: "GRAY"}


def new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (temporary name, then renamed)."""
    with atomic_output(Path(path)) as partial:
        fig.savefig(partial, dpi=dpi, format="png")
    return Path(path)
