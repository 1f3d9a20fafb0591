"""Ground truth of a simulated movie, and its small HDF5 file.

Conventions: x = column, y = row, pixel centres at integers; frame *t* is
exposed during ``[t, t + 1)`` frame periods. A point at reference position
``p`` (frame 0) appears in frame *t* at
``R(rotation_deg[t]) @ (p - c) + c + drift_xy[t]`` with ``c = ((W - 1) / 2, (H - 1) / 2)``
and ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on ``(x, y)``.

File layout (``truth_format_version`` = 1)::

    /                   attrs: truth_format_version (int), seed (int), psf_sigma_px (float)
    /positions_xy       (E, 2) float64  reference-frame positions, px; columns x, y
    /brightness         (E,)   float64  expected photons of each emitter in a fully-on frame
    /on_fraction        (T, E) float32  fraction of frame t's exposure emitter e is ON, in [0, 1]
    /photons            (T, E) float32  brightness * on_fraction, expected detected photons
    /drift_xy           (T, 2) float64  px; drift_xy[0] == (0, 0)
    /rotation_deg       (T,)   float64  degrees; rotation_deg[0] == 0
    /background_map     (H, W) float64  expected background photons per pixel per frame
    /camera             group, attrs: offset_adu, gain_adu_per_e, read_noise_e
    /params             group, one attribute per SimulationParams field

Every dataset carries a ``units`` attribute. Files are written to a temporary
name and renamed, so a file under its final name is always complete.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from plstream.acquire_adapters.base import InputError

if TYPE_CHECKING:
    from plstream.acquire_adapters.simulated.camera import SimulationParams

__all__ = ["TRUTH_FORMAT_VERSION", "SimulationTruth", "load_truth", "save_truth"]

#: Version of the truth file layout written by :func:`save_truth`.
TRUTH_FORMAT_VERSION = 1

_DATASETS = {
    "positions_xy": "px",
    "brightness": "photons",
    "on_fraction": "1",
    "photons": "photons",
    "drift_xy": "px",
    "rotation_deg": "deg",
    "background_map": "photons/px/frame",
}
_CAMERA_KEYS = ("offset_adu", "gain_adu_per_e", "read_noise_e")


@dataclass(frozen=True, eq=False)
class SimulationTruth:
    """Everything the simulator knows about a movie (see the module docstring for the conventions).

    Attributes
    ----------
    params : SimulationParams
        The parameters the movie was made with.
    seed : int
        Its seed.
    positions_xy : numpy.ndarray, (E, 2) float64
        Reference-frame (frame 0) positions in px, columns x, y.
    brightness : numpy.ndarray, (E,) float64
        Expected detected photons of each emitter in a fully-on frame.
    on_fraction : numpy.ndarray, (T, E) float32
        Fraction of each frame's exposure each emitter is ON.
    photons : numpy.ndarray, (T, E) float32
        ``brightness * on_fraction``: the expected detected photons (the true trace).
    drift_xy : numpy.ndarray, (T, 2) float64
        Translation of frame t relative to frame 0, px (``drift_xy[0] == (0, 0)``).
    rotation_deg : numpy.ndarray, (T,) float64
        Rotation of frame t about the image centre, degrees (``rotation_deg[0] == 0``).
    background_map : numpy.ndarray, (H, W) float64
        Expected background photons per pixel per frame.
    camera : dict
        ``offset_adu``, ``gain_adu_per_e``, ``read_noise_e``.
    psf_sigma_px : float
        Gaussian PSF standard deviation, px.
    """

    params: SimulationParams
    seed: int
    positions_xy: np.ndarray
    brightness: np.ndarray
    on_fraction: np.ndarray
    photons: np.ndarray
    drift_xy: np.ndarray
    rotation_deg: np.ndarray
    background_map: np.ndarray
    camera: dict[str, float]
    psf_sigma_px: float

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.on_fraction.shape[0])

    @property
    def n_emitters(self) -> int:
        """Number of emitters E."""
        return int(self.positions_xy.shape[0])

    def positions_in_frame(self, t: int) -> np.ndarray:
        """Positions of all emitters in frame ``t`` (px, (E, 2), columns x, y).

        ``R(rotation_deg[t]) @ (positions_xy - c) + c + drift_xy[t]`` with c the image centre.
        """
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} is outside the movie (0..{self.n_frames - 1})")
        height, width = self.background_map.shape
        centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        angle = np.deg2rad(self.rotation_deg[t])
        if angle == 0.0:
            return self.positions_xy + self.drift_xy[t]
        c, s = np.cos(angle), np.sin(angle)
        rel = self.positions_xy - centre
        rotated = np.column_stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]])
        return rotated + centre + self.drift_xy[t]


def save_truth(truth: SimulationTruth, path: str | os.PathLike[str]) -> Path:
    """Write ``truth`` to a small HDF5 file (layout in the module docstring).

    Parameters
    ----------
    truth : SimulationTruth
    path : path-like
        Destination; written to ``<path>.partial`` first, then renamed.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w") as f:
        f.attrs["truth_format_version"] = TRUTH_FORMAT_VERSION
        f.attrs["seed"] = int(truth.seed)
        f.attrs["psf_sigma_px"] = float(truth.psf_sigma_px)
        for name, units in _DATASETS.items():
            data = np.asarray(getattr(truth, name))
            big = data.size > 65536
            dset = f.create_dataset(name, data=data, compression="gzip" if big else None, shuffle=big)
            dset.attrs["units"] = units
        camera = f.create_group("camera")
        for key in _CAMERA_KEYS:
            camera.attrs[key] = float(truth.camera[key])
        params = f.create_group("params")
        for key, value in dataclasses.asdict(truth.params).items():
            params.attrs[key] = np.asarray(value) if isinstance(value, tuple) else value
    os.replace(partial, path)
    return path


def _attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return tuple(v.item() for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_truth(path: str | os.PathLike[str]) -> SimulationTruth:
    """Read a truth file written by :func:`save_truth`.

    Raises
    ------
    InputError
        When the file is missing, is not HDF5, lacks a dataset, or has another
        ``truth_format_version``.
    """
    from plstream.acquire_adapters.simulated.camera import SimulationParams

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "no such truth file; simulated movies keep theirs as <movie>.truth.h5")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(str(path), f"not a readable HDF5 truth file ({exc})") from exc
    with f:
        version = f.attrs.get("truth_format_version")
        if version is None:
            raise InputError(str(path), "has no truth_format_version attribute; it is not a plstream truth file")
        if int(version) != TRUTH_FORMAT_VERSION:
            raise InputError(
                str(path),
                f"truth format version {int(version)}; this plstream reads version {TRUTH_FORMAT_VERSION} "
                "(regenerate it with `plstream simulate`)",
            )
        missing = [name for name in (*_DATASETS, "camera", "params") if name not in f]
        if missing:
            raise InputError(
                str(path), f"truth file lacks {', '.join(missing)}; regenerate it with `plstream simulate`"
            )
        arrays = {name: f[name][()] for name in _DATASETS}
        camera = {key: float(f["camera"].attrs[key]) for key in _CAMERA_KEYS}
        stored = {key: _attr(value) for key, value in f["params"].attrs.items()}
        known = {field.name for field in dataclasses.fields(SimulationParams)}
        params = SimulationParams(**{key: value for key, value in stored.items() if key in known})
        return SimulationTruth(
            params=params,
            seed=int(f.attrs["seed"]),
            camera=camera,
            psf_sigma_px=float(f.attrs["psf_sigma_px"]),
            **arrays,
        )
