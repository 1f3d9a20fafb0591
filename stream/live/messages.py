"""The live result protocol's schema: what a dashboard asks an analyzer, and what it gets back.

A running analyzer serves its results on one ZeroMQ endpoint (a ROUTER socket;
``docs/wire_format.md``, section "Live result protocol"). A viewer never
subscribes to a push stream: it *asks* for what it lacks. Each
:class:`LiveRequest` says which frame the viewer needs next and which images it
already has; the :class:`LiveUpdate` in reply carries the rows from that frame
on (at most ``max_frames`` of them), the current spot table and counters, and
the images only when newer ones exist.

Why pull and not publish: a late joiner gets the whole history by asking from
frame 0; a slow or frozen viewer simply asks less often, so nothing queues up
in the analyzer and the analysis never waits for a screen; a viewer that was
disconnected asks again from where it stopped. A change of ``session_id``
(the analyzer restarted) tells the viewer to start over.

Encoding and validation live in :mod:`plstream.stream.live.wire`. Any change
to these fields bumps :data:`LIVE_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LIVE_STATES", "LIVE_VERSION", "LiveRequest", "LiveUpdate", "empty_update"]

LIVE_VERSION = 1
"""Version of the live result protocol; decoders reject other versions."""

LIVE_STATES: tuple[str, ...] = ("waiting", "running", "complete", "interrupted", "error")
"""``status["state"]`` values: no frame analyzed yet; analyzing; the stream ended
normally; the source or the user stopped it; the analysis failed (``status["message"]`` says why)."""


@dataclass(frozen=True)
class LiveRequest:
    """A viewer's request.

    Attributes
    ----------
    session_id : str
        The analyzer session the viewer's data came from, ``""`` for none. When
        it differs from the server's, the reply starts at frame 0.
    since_frame : int
        First frame index (row t of the result file) the viewer does not have yet.
    image_version : int
        Version of the latest-frame image the viewer has, -1 for none.
    mean_version : int
        Version of the mean image the viewer has, -1 for none.
    max_frames : int
        Most rows the reply may carry (the viewer asks again for the rest).
    """

    session_id: str = ""
    since_frame: int = 0
    image_version: int = -1
    mean_version: int = -1
    max_frames: int = 4096


@dataclass(frozen=True)
class LiveUpdate:
    """The analyzer's answer: rows ``first_frame .. first_frame + n - 1`` and the current state.

    Attributes
    ----------
    session_id : str
        Random identifier of this analyzer session (new at each start).
    info : dict
        Run description, constant for a session: ``run_uid`` (str), ``shape``
        ([rows, cols]), ``source`` (the source's describe() dict), ``result_path``
        (str), ``frame_rate_hz`` (float or None), ``psf_sigma_px`` (float or None).
    status : dict
        Counters at the time of the reply: ``state`` (one of :data:`LIVE_STATES`),
        ``message`` (str), ``frames_received``, ``frames_analyzed``, ``frames_failed``,
        ``frames_missing``, ``gaps``, ``spots``, ``source_frames`` (int or None),
        ``frames_per_second`` (float), ``elapsed_s`` (float), ``lag_s`` (float or None:
        seconds from the source publishing the last analyzed frame to its result),
        ``lag_frames`` (int or None: frames the source has sent that are not analyzed yet).
    first_frame : int
        Frame index of row 0 of the per-frame arrays.
    n_frames_total : int
        Frames the server holds; rows beyond ``first_frame + n`` are for the next request.
    seq, timestamp : (n,) int64, float64
        Source sequence number and timestamp (s) of each row.
    drift_xy : (n, 2) float64
        [dx, dy] px of each row.
    intensity : (n, S) float32
        Background-subtracted aperture intensity, photons (NaN before a spot's discovery).
    state : (n, S) int8
        1 on, 0 off, -1 not measured.
    spots_x, spots_y : (S,) float64
        Spot positions in the reference frame, px (S = spots known at the reply).
    spots_first_frame : (S,) int64
        Frame index of each spot's discovery.
    image : (H, W) array or None
        The latest frame as received (raw camera units), when newer than the
        request's ``image_version``.
    image_frame : int
        Frame index of ``image`` (-1 when none).
    image_version : int
        Version of the server's latest image (-1 when none yet).
    mean_image : (H, W) float32 or None
        Drift-corrected mean image (photons/px/frame, reference coordinates), when
        newer than the request's ``mean_version``.
    mean_version : int
        Version of the server's mean image (-1 when none yet).
    """

    session_id: str
    info: dict[str, Any]
    status: dict[str, Any]
    first_frame: int
    n_frames_total: int
    seq: np.ndarray
    timestamp: np.ndarray
    drift_xy: np.ndarray
    intensity: np.ndarray
    state: np.ndarray
    spots_x: np.ndarray
    spots_y: np.ndarray
    spots_first_frame: np.ndarray
    image: np.ndarray | None = None
    image_frame: int = -1
    image_version: int = -1
    mean_image: np.ndarray | None = None
    mean_version: int = -1

    @property
    def n_frames(self) -> int:
        """Rows in this update."""
        return int(self.seq.shape[0])

    @property
    def n_spots(self) -> int:
        """S, spots known at the reply."""
        return int(self.spots_x.shape[0])

    @property
    def more(self) -> bool:
        """The server holds rows after these: ask again at once."""
        return self.first_frame + self.n_frames < self.n_frames_total


def empty_update(session_id: str, info: dict[str, Any], status: dict[str, Any], first_frame: int = 0) -> LiveUpdate:
    """An update without rows or spots (e.g. before the first frame is analyzed)."""
    return LiveUpdate(
        session_id=session_id,
        info=info,
        status=status,
        first_frame=first_frame,
        n_frames_total=first_frame,
        seq=np.zeros(0, np.int64),
        timestamp=np.zeros(0, np.float64),
        drift_xy=np.zeros((0, 2), np.float64),
        intensity=np.zeros((0, 0), np.float32),
        state=np.zeros((0, 0), np.int8),
        spots_x=np.zeros(0, np.float64),
        spots_y=np.zeros(0, np.float64),
        spots_first_frame=np.zeros(0, np.int64),
    )
