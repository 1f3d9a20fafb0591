"""``plstream export fit``: one spot's Gaussian fit in one frame, ``gauss_fit_SPOT{N}_frame{M}.png``.

Three panels over the fitting region: the data (photons), the fitted
pixel-integrated Gaussian plus background, and the residuals
(data - model), with the fitted parameters and their uncertainty.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy.special import erf

from plstream.acquire_adapters.files.open_movie import open_movie
from plstream.analysis.exports._common import ExportError, ResultBlocks, psf_sigma_px
from plstream.analysis.exports._figures import new_figure, save_png

__all__ = ["export_fit", "fit_figure_name", "gaussian_model"]


def fit_figure_name(spot: int, frame: int) -> str:
    return f"gauss_fit_SPOT{spot}_frame{frame}.png"


def gaussian_model(
    shape: tuple[int, int], x0: float, y0: float, photons: float, sigma: float, bg: float, origin: tuple[int, int]
) -> np.ndarray:
    """Expected photons per pixel of a pixel-integrated Gaussian (integral ``photons``) on ``bg``.

    ``origin`` = (column, row) of the region's first pixel; x = column, pixel centres at integers.
    """
    cols = origin[0] + np.arange(shape[1])
    rows = origin[1] + np.arange(shape[0])
    s = 1.0 / (math.sqrt(2.0) * sigma)
    ex = 0.5 * (erf((cols - x0 + 0.5) * s) - erf((cols - x0 - 0.5) * s))
    ey = 0.5 * (erf((rows - y0 + 0.5) * s) - erf((rows - y0 - 0.5) * s))
    return photons * ey[:, None] * ex[None, :] + bg


def _movie_frame(movie: str | os.PathLike[str], seq: int) -> np.ndarray:
    source = open_movie(movie)
    try:
        for frame in source:
            if frame.seq == seq:
                return np.asarray(frame.data, dtype=np.float64)
            if frame.seq > seq:
                break
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    raise ExportError(f"the movie {movie} has no frame {seq}")


def export_fit(
    result: str | os.PathLike[str],
    movie: str | os.PathLike[str],
    spot: int,
    frame: int,
    out_dir: str | os.PathLike[str] = ".",
) -> Path:
    """Write ``gauss_fit_SPOT{spot}_frame{frame}.png`` into ``out_dir``.

    ``frame`` is the source's frame number (``/frames/seq``, the ``frame`` column of the CSV).
    """
    with ResultBlocks.open(result) as blocks:
        head = blocks.head
        if not 0 <= spot < blocks.n_spots:
            raise ExportError(f"spot {spot} is not in {result} (spots 0..{blocks.n_spots - 1})")
        row = None
        for block in blocks.blocks():
            hit = np.flatnonzero(np.asarray(block.seq) == frame)
            if len(hit):
                row = block, int(hit[0])
                break
    if row is None:
        raise ExportError(f"frame {frame} is not in {result} (not analyzed yet, or lost)")
    block, r = row
    camera = head.camera
    offset = float(camera.get("offset_adu", 0.0))
    gain = float(camera.get("gain_adu_per_e", 1.0))
    photons_img = (_movie_frame(movie, frame) - offset) / gain
    sigma0 = psf_sigma_px(head)
    roi = head.settings.get("fit", {}).get("roi_size_px")
    size = int(roi) if isinstance(roi, int) and roi > 0 else 2 * math.ceil(3.0 * sigma0) + 1
    size = max(size | 1, 7) + 2
    fx, fy = float(block.fit_x[r, spot]), float(block.fit_y[r, spot])
    fitted = math.isfinite(fx) and math.isfinite(fy)
    cx = fx if fitted else float(head.spots_x[spot] + block.drift_xy[r, 0])
    cy = fy if fitted else float(head.spots_y[spot] + block.drift_xy[r, 1])
    half = size // 2
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    h, w = photons_img.shape
    xa, ya = max(x0, 0), max(y0, 0)
    data = photons_img[ya : min(y0 + size, h), xa : min(x0 + size, w)]
    if fitted:
        model = gaussian_model(
            data.shape,
            fx,
            fy,
            float(block.fit_amplitude[r, spot]),
            float(block.fit_sigma[r, spot]),
            float(block.fit_background[r, spot]),
            (xa, ya),
        )
    else:
        model = np.full(data.shape, float(block.background[r, spot]))
    resid = data - model
    fig = new_figure(10.0, 3.8)
    axes = fig.subplots(1, 3)
    extent = (xa - 0.5, xa + data.shape[1] - 0.5, ya + data.shape[0] - 0.5, ya - 0.5)
    low, high = float(min(data.min(), model.min())), float(max(data.max(), model.max()))
    for ax, img, title in ((axes[0], data, "data"), (axes[1], model, "model")):
        shown = ax.imshow(img, cmap="viridis", vmin=low, vmax=high, extent=extent, interpolation="nearest")
        ax.set_title(title)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="photons / px")
    span = float(np.max(np.abs(resid))) or 1.0
    shown = axes[2].imshow(resid, cmap="RdBu_r", vmin=-span, vmax=span, extent=extent, interpolation="nearest")
    axes[2].set_title("residuals (data - model)")
    fig.colorbar(shown, ax=axes[2], shrink=0.8, label="photons / px")
    for ax in axes:
        ax.set_xlabel("x (px)")
        if fitted:
            ax.plot([fx], [fy], marker="+", color="white", markersize=10)
    axes[0].set_ylabel("y (px)")
    if fitted:
        text = (
            f"x = {fx:.3f}, y = {fy:.3f} px (± {float(block.fit_uncertainty[r, spot]):.3f}), "
            f"N = {float(block.fit_amplitude[r, spot]):.0f} photons, sigma = {float(block.fit_sigma[r, spot]):.2f} px, "
            f"bg = {float(block.fit_background[r, spot]):.1f} photons/px; "
            f"chi2/px = {float(np.mean(resid**2 / np.maximum(model, 1.0))):.2f}"
        )
    else:
        text = "not fitted in this frame (no significant signal: OFF); model = the local background"
    fig.suptitle(f"spot_{spot}, frame {frame}: {text}", fontsize=8)
    return save_png(fig, Path(out_dir) / fit_figure_name(spot, frame), dpi=110)
