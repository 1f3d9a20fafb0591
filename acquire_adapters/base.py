"""The one small interface every frame source implements.

A source yields :class:`Frame` objects (a 2-D image with a sequence number, a
timestamp and a small metadata dict) and describes itself once with
:meth:`FrameSource.describe`, which becomes the stream's ``start`` message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["CameraError", "CorruptInputError", "Frame", "FrameSource", "InputError"]


class InputError(ValueError):
    """An input (file, folder, device) cannot be used; the message says why and what to do.

    Parameters
    ----------
    path : str
        The file, folder or device the problem is about.
    problem : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CorruptInputError(InputError):
    """An input that opened but whose content is damaged (truncated, undecodable)."""


class CameraError(InputError):
    """A camera failed: it could not be configured, or it stopped delivering, was unplugged or reset mid-run."""


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    Attributes
    ----------
    seq : int
        Sequence number within the run, 0-based, incremented by one per frame
        the source produced (a jump means frames were lost downstream).
    timestamp : float
        Acquisition time in seconds (Unix epoch for live sources; for files,
        ``seq / frame_rate`` when a rate is known, else the read time).
    data : numpy.ndarray
        2-D image (rows, columns), C-contiguous. x = column, y = row.
    metadata : dict
        Small msgpack-serializable extras (e.g. exposure). May be empty.
    """

    seq: int
    timestamp: float
    data: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FrameSource(Protocol):
    """What the publisher needs from a camera or file adapter.

    ``describe()`` returns a msgpack-serializable dict with at least
    ``source`` (kind name), ``shape`` ([rows, cols]), ``dtype`` (numpy name)
    and ``n_frames`` (int, or None when unbounded). It may carry, when the
    source knows them: ``frame_rate_hz``; ``frame_interval_s``;
    ``pixel_size_um`` (sample-plane pixel size, µm); ``camera``
    (``offset_adu``, ``gain_adu_per_e``, ``read_noise_e``: the photon model);
    ``device`` (what the hardware says of itself: ``vendor``, ``model``,
    ``serial``, ``pixel_format``, ...); ``live`` (True for a camera that
    cannot wait for its consumer: frames it delivers while the consumer lags
    are queued, then dropped and counted).

    A frame's ``seq`` is its number in the source's own count (a camera's
    frame ID from its first frame), so frames lost before plstream got them
    (inside a camera or its driver) show as gaps downstream.
    """

    def describe(self) -> dict[str, Any]:
        """Return the source description for the stream's ``start`` message."""
        ...

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in order."""
        ...

    def stop(self) -> None:
        """Make an iteration in progress end soon (within about a second); safe from another thread.

        A live camera stops acquiring; a file stops after the current frame.
        """
        ...

    def close(self) -> None:
        """Release files, devices and threads; safe to call twice."""
        ...
