"""``plstream export image``: the drift-corrected average image with every spot circled and labelled ``spot_N``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.patches import Circle

from plstream.analysis.exports._common import ExportError, ResultBlocks, aperture_radius_px, spot_label
from plstream.analysis.exports._figures import new_figure, save_png

__all__ = ["export_image"]


def export_image(result: str | os.PathLike[str], out: str | os.PathLike[str], *, labels: bool = True) -> Path:
    """Write the average image (``/images/mean``) with every spot's aperture circled and its ID, as a PNG.

    Raises
    ------
    ValueError
        The file has no mean image (written by plstream before 0.2).
    """
    with ResultBlocks.open(result) as blocks:
        head = blocks.head
    image = head.mean_image
    if image is None or not np.isfinite(image).any():
        raise ExportError(f"{result} has no mean image yet (/images/mean); it needs plstream >= 0.2 and one flush")
    height, width = image.shape
    low, high = np.nanpercentile(image, [1.0, 99.7])
    # big enough that the labels of many spots stay apart; the height fits the image, the colour bar and labels
    fig_width = max(6.0, min(16.0, max(width / 60.0, 1.1 * np.sqrt(max(head.n_spots, 1)))))
    fig = new_figure(fig_width, (fig_width - 2.0) * height / width + 0.9)
    ax = fig.add_subplot()
    shown = ax.imshow(image, cmap="gray", vmin=low, vmax=high, origin="upper", interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="photons / px / frame")
    radius = aperture_radius_px(head)
    font = 6.5 if head.n_spots > 60 else 8.0
    for i, (x, y) in enumerate(zip(head.spots_x, head.spots_y)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        ax.add_patch(Circle((x, y), radius, fill=False, edgecolor="#ffcc00", linewidth=0.7))
        if labels:
            ax.text(x + radius + 0.5, y - radius, spot_label(i), color="#ffcc00", fontsize=font, va="bottom")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    state = "" if head.status == "complete" else f" ({head.status}: {blocks.n_frames} frames so far)"
    ax.set_title(f"{Path(result).name}: drift-corrected mean, {head.n_spots} spots{state}", fontsize=9)
    return save_png(fig, Path(out), dpi=120)
