"""What an analysis session tells its live viewers, and how often: :class:`LiveFeed`.

The analysis session (:class:`~plstream.analysis.session.AnalysisSession`)
owns one when it runs with ``live=True``; the feed knows the session only
through its counters (:class:`SessionCounters`) and the spot table
(:class:`SpotTable`). The feed fills the session's
:class:`~plstream.stream.live.history.LiveState`: the run description when the
stream starts, the latest raw frame at most every ``live.image_interval_s``
(a copy of that frame only; other frames cost nothing), the spot table and
the running mean at most every ``live.mean_interval_s`` (the spot table also
at once when new spots appear, O(S)) — the mean the session computed for the
result file (O(H·W), every 0.5 s), never one of its own — and the final state after
the last rows. It also builds the ``LiveUpdate.status`` dict, including the
lag: seconds from the source publishing a frame (``metadata["t_pub"]``,
stamped by :class:`~plstream.stream.FramePublisher`) to its analysis. The
lag needs the source's clock to agree with this machine's; on one machine
it always does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from plstream.config import Settings
from plstream.stream.live.history import LiveState
from plstream.stream.messages import FrameMessage

__all__ = ["LiveFeed", "SessionCounters", "SpotTable"]


class SessionCounters(Protocol):
    """What the feed reads of a session's counters (e.g. :class:`~plstream.analysis.session.SessionStatus`)."""

    started_at: float
    frames_received: int
    frames_analyzed: int

    def counters(self) -> dict[str, int | None]:
        """The frame and spot counters served to viewers."""
        ...


class SpotTable(Protocol):
    """The spots found so far (e.g. :class:`~plstream.analysis.spots.SpotCatalog`)."""

    @property
    def xy(self) -> np.ndarray:
        """(S, 2) reference-frame positions, px."""
        ...

    @property
    def first_frame(self) -> np.ndarray:
        """(S,) frame index where each spot was found."""
        ...

    def __len__(self) -> int: ...


class LiveFeed:
    """Feeds a session's :class:`LiveState` and reports its status.

    Parameters
    ----------
    status : SessionCounters
        The session's counters (read, never written).
    output_path : path
        The result file (``info["result_path"]``).
    settings : Settings
        ``live.image_interval_s`` and ``live.mean_interval_s`` set the cadence;
        ``psf.sigma_px`` is the PSF width until one is measured.

    Attributes
    ----------
    state : LiveState
        What the live result server answers from.
    """

    def __init__(self, status: SessionCounters, output_path: str | Path, settings: Settings) -> None:
        self._status = status
        self._image_interval_s = settings.live.image_interval_s
        self._mean_interval_s = settings.live.mean_interval_s
        self._last_image = -float("inf")
        self._last_mean = -float("inf")
        self._spots_published = 0
        self._psf_published = False
        self._frame_rate_hz: float | None = None
        self._lag_s: float | None = None
        self._lag_frames: int | None = None
        self._final: tuple[str, str] | None = None
        self._ended_at: float | None = None
        info = {"result_path": str(output_path), "frame_rate_hz": None, "psf_sigma_px": settings.psf.sigma_px}
        self.state = LiveState(info, self.status)

    def describe_run(
        self, run_uid: str, shape: tuple[int, ...], source: dict[str, Any], units: dict[str, Any] | None = None
    ) -> None:
        """The run description, once the stream has started.

        ``source`` is the source's describe() dict; ``units`` the run's
        ``pixel_size_um`` and ``frame_interval_s`` (None when unknown).
        """
        rate = source.get("frame_rate_hz")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
            self._frame_rate_hz = float(rate)
        else:
            self._frame_rate_hz = None
        self.state.update_info(
            run_uid=run_uid,
            shape=[int(n) for n in shape],
            source=json.loads(json.dumps(source, default=str)),  # plain values only, as in the result file
            frame_rate_hz=self._frame_rate_hz,
            pixel_size_um=(units or {}).get("pixel_size_um"),
            frame_interval_s=(units or {}).get("frame_interval_s"),
        )

    def on_frame(
        self, message: FrameMessage, spots: SpotTable, mean: np.ndarray | None, psf_sigma_px: float | None
    ) -> None:
        """After a frame was analyzed (its rows appended): the lag, and the images and spot table when due.

        ``mean`` is the running mean when the session has just computed one for
        the result file (else None); it is passed on when the mean is due.
        ``psf_sigma_px`` is the PSF width once measured (None before).
        """
        t_pub = message.metadata.get("t_pub")
        if isinstance(t_pub, (int, float)) and not isinstance(t_pub, bool):
            lag = time.time() - float(t_pub)
            self._lag_s = lag
            self._lag_frames = round(lag * self._frame_rate_hz) if self._frame_rate_hz else None
        now = time.monotonic()
        if now - self._last_image >= self._image_interval_s:
            self._last_image = now
            self.state.offer_image(self._status.frames_analyzed - 1, message.data)
        if mean is not None and now - self._last_mean >= self._mean_interval_s:
            self._last_mean = now
            self.publish_tables(spots, mean, psf_sigma_px)
        elif len(spots) > self._spots_published:
            self._publish_spots(spots)

    def publish_tables(self, spots: SpotTable, mean: np.ndarray, psf_sigma_px: float | None) -> None:
        """Spot table, the running ``mean`` and, once measured, the PSF width (call at the end too)."""
        self._publish_spots(spots)
        self.state.set_mean_image(mean)
        if not self._psf_published and psf_sigma_px is not None:
            self._psf_published = True
            self.state.update_info(psf_sigma_px=float(psf_sigma_px))

    def _publish_spots(self, spots: SpotTable) -> None:
        self.state.set_spots(spots.xy[:, 0], spots.xy[:, 1], spots.first_frame)
        self._spots_published = len(spots)

    def finish(self, state: str, message: str = "") -> None:
        """Set the final state ("complete", "interrupted", "error") after the last rows were appended."""
        self._ended_at = time.monotonic()
        self._final = (state, message)

    def status(self) -> dict[str, Any]:
        """The ``LiveUpdate.status`` dict now; called from the server's thread, it only reads attributes."""
        s = self._status
        end = self._ended_at if self._ended_at is not None else time.monotonic()
        elapsed = max(end - s.started_at, 0.0)
        if self._final is not None:
            state, message = self._final
        elif s.frames_analyzed == 0:
            state = "waiting"
            message = "waiting for the first frame" if s.frames_received == 0 else "preparing the analysis"
        else:
            state, message = "running", ""
        return {
            "state": state,
            "message": message,
            **s.counters(),
            "frames_per_second": s.frames_analyzed / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "lag_s": self._lag_s,
            "lag_frames": self._lag_frames,
        }
