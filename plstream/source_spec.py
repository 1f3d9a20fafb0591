"""Which frame source a command streams, as a small picklable description.

A :class:`SourceSpec` crosses into the source process (spawned, so it must
pickle); :func:`build_source` turns it into a live
:class:`~plstream.acquire_adapters.base.FrameSource` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plstream.acquire_adapters import SimulatedCamera, SimulationParams, open_movie
from plstream.acquire_adapters.base import FrameSource
from plstream.config import Settings, SimulationSettings

__all__ = ["SourceSpec", "build_source", "simulation_params"]


@dataclass(frozen=True)
class SourceSpec:
    """What to stream.

    Attributes
    ----------
    kind : str
        ``"simulated"`` or ``"file"``.
    path : str
        File or folder for ``kind="file"``.
    simulation : SimulationSettings | None
        Parameters for ``kind="simulated"``.
    """

    kind: str
    path: str = ""
    simulation: SimulationSettings | None = None

    @property
    def live(self) -> bool:
        """A paced simulated camera behaves like a live camera (it cannot wait for the analyzer)."""
        return self.kind == "simulated" and self.simulation is not None and self.simulation.paced

    @classmethod
    def simulated(cls, settings: Settings) -> SourceSpec:
        return cls(kind="simulated", simulation=settings.simulation)

    @classmethod
    def file(cls, path: str | Path) -> SourceSpec:
        return cls(kind="file", path=str(path))


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
        frame_rate_hz=sim.frame_rate_hz,
    )


def build_source(spec: SourceSpec) -> FrameSource:
    """Open the source a spec describes (raises InputError for unusable files)."""
    if spec.kind == "simulated":
        assert spec.simulation is not None
        return SimulatedCamera(
            simulation_params(spec.simulation), seed=spec.simulation.seed, paced=spec.simulation.paced
        )
    if spec.kind == "file":
        return open_movie(spec.path)
    raise ValueError(f"unknown source kind {spec.kind!r}; use 'simulated' or 'file'")
