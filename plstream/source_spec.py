"""Which frame source a command streams, as a small picklable description.

A :class:`SourceSpec` crosses into the source process (spawned, so it must
pickle); :func:`build_source` turns it into a live
:class:`~plstream.acquire_adapters.base.FrameSource` there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plstream.acquire_adapters import SimulatedCamera, SimulationParams, open_movie
from plstream.acquire_adapters.base import Frame, FrameSource
from plstream.config import GenicamSettings, MicroManagerSettings, Settings, SimulationSettings

__all__ = ["SourceSpec", "build_source", "simulation_params"]


CAMERA_KINDS = ("genicam", "micromanager")
"""Source kinds that are real cameras (live: they cannot wait, and their raw frames are recorded by default)."""


@dataclass(frozen=True)
class SourceSpec:
    """What to stream.

    Attributes
    ----------
    kind : str
        ``"simulated"``, ``"file"``, ``"genicam"`` or ``"micromanager"``.
    path : str
        File or folder for ``kind="file"``.
    simulation : SimulationSettings | None
        Parameters for ``kind="simulated"``.
    genicam : GenicamSettings | None
        The camera for ``kind="genicam"`` (``[camera.genicam]``).
    micromanager : MicroManagerSettings | None
        The camera for ``kind="micromanager"`` (``[camera.micromanager]``).
    max_frames : int | None
        End the run after this many frames (a camera otherwise runs until stopped).
    first_seq : int
        Send only the frames from this ``seq`` on (a resumed file replay); the
        ones before are read and skipped.
    """

    kind: str
    path: str = ""
    simulation: SimulationSettings | None = None
    genicam: GenicamSettings | None = None
    micromanager: MicroManagerSettings | None = None
    max_frames: int | None = None
    first_seq: int = 0

    @property
    def live(self) -> bool:
        """A camera (or the paced simulated camera) cannot wait for the analyzer."""
        if self.kind in CAMERA_KINDS:
            return True
        return self.kind == "simulated" and self.simulation is not None and self.simulation.paced

    @property
    def is_camera(self) -> bool:
        """A real camera (not a file, not the simulator)."""
        return self.kind in CAMERA_KINDS

    @classmethod
    def simulated(cls, settings: Settings) -> SourceSpec:
        return cls(kind="simulated", simulation=settings.simulation)

    @classmethod
    def file(cls, path: str | Path, *, first_seq: int = 0) -> SourceSpec:
        return cls(kind="file", path=str(path), first_seq=int(first_seq))

    @classmethod
    def named(cls, name: str, settings: Settings, *, max_frames: int | None = None) -> SourceSpec:
        """The source a command line names: ``simulated``, ``genicam``, ``micromanager`` or a movie's path.

        ``max_frames`` bounds a camera's run (the simulated camera and files have their own length).
        """
        if name == "simulated":
            return cls.simulated(settings)
        if name == "genicam":
            return cls(kind="genicam", genicam=settings.camera.genicam, max_frames=max_frames)
        if name == "micromanager":
            return cls(kind="micromanager", micromanager=settings.camera.micromanager, max_frames=max_frames)
        return cls.file(name)


def simulation_params(sim: SimulationSettings) -> SimulationParams:
    """The simulator's parameters for the ``[simulation]`` settings."""
    return SimulationParams(
        shape=sim.shape_px,
        n_frames=sim.n_frames,
        n_emitters=sim.n_emitters,
        photons_per_frame=sim.photons_per_frame,
        background_photons=sim.background_photons,
        psf_sigma_px=sim.psf_sigma_px,
        drift_max_px=sim.drift_max_px,
        rotation_max_deg=sim.rotation_max_deg,
        contrast=sim.contrast,
        frame_rate_hz=sim.frame_rate_hz,
        on_exponent=sim.on_exponent,
        off_exponent=sim.off_exponent,
        on_truncation_frames=sim.on_truncation_frames or math.inf,  # 0 in the settings: no cut-off
        off_truncation_frames=sim.off_truncation_frames or math.inf,
        bleach_on_frames=sim.bleach_on_frames or math.inf,
    )


class _FromSeq:
    """A source's frames from ``first_seq`` on (a resumed replay); the earlier ones are read and dropped."""

    def __init__(self, source: FrameSource, first_seq: int) -> None:
        self._source = source
        self._first_seq = first_seq

    def describe(self) -> dict[str, Any]:
        return {**self._source.describe(), "first_seq": self._first_seq}

    def __iter__(self) -> Iterator[Frame]:
        return (frame for frame in self._source if frame.seq >= self._first_seq)

    def stop(self) -> None:
        self._source.stop()

    def close(self) -> None:
        self._source.close()


def build_source(spec: SourceSpec) -> FrameSource:
    """Open the source a spec describes (a camera is opened and configured here).

    Raises
    ------
    InputError
        An unusable file, or a camera that cannot be found, opened or
        configured (also when its optional support is not installed).
    """
    if spec.kind == "simulated" and spec.simulation is not None:
        return SimulatedCamera(
            simulation_params(spec.simulation), seed=spec.simulation.seed, paced=spec.simulation.paced
        )
    if spec.kind == "file":
        movie = open_movie(spec.path)
        return _FromSeq(movie, spec.first_seq) if spec.first_seq > 0 else movie
    if spec.kind == "genicam" and spec.genicam is not None:
        from plstream.acquire_adapters.cameras.genicam import GenicamCamera

        g = spec.genicam
        return GenicamCamera(
            cti=g.cti,
            device=g.device,
            pixel_format=g.pixel_format,
            exposure_us=g.exposure_us,
            frame_rate_hz=g.frame_rate_hz,
            roi_px=g.roi_px,
            buffers=g.buffers,
            nodes=dict(g.nodes),
        )
    if spec.kind == "micromanager" and spec.micromanager is not None:
        from plstream.acquire_adapters.cameras.micromanager import MicroManagerCamera

        m = spec.micromanager
        return MicroManagerCamera(
            config=m.config,
            camera=m.camera,
            adapter_path=m.adapter_path,
            exposure_ms=m.exposure_ms,
            binning=m.binning,
            roi_px=m.roi_px,
            buffer_mb=m.buffer_mb,
        )
    raise ValueError(f"unusable source spec {spec!r}; kinds: simulated, file, {', '.join(CAMERA_KINDS)}")
