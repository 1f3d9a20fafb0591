"""Feeds: worker threads that pull results into a :class:`~plstream.dashboard.model.DashboardModel`.

A feed never pushes work onto the analyzer: it asks for what the model lacks
(:meth:`DashboardModel.next_request`), applies the answer under the model's
lock, and asks again. :class:`StreamFeed` talks to a running analyzer's live
result server (ZeroMQ); :class:`FileFeed` follows a result file, finished or
still growing. Neither touches Qt: the GUI timer reads the model.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from plstream.analysis.result_file import ResultFileError, ResultFollower, Results, load_results
from plstream.dashboard.model import DashboardModel
from plstream.stream.live.messages import LiveUpdate

if TYPE_CHECKING:  # only for annotations: the feed module stays light
    from plstream.stream.security import Security

__all__ = ["FileFeed", "StreamFeed", "results_to_update"]

logger = logging.getLogger(__name__)


class _Feed:
    """Common thread handling: ``start(model)``, ``stop()``, ``caught_up``, ``error``."""

    name = "feed"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.caught_up = threading.Event()
        """Set once the model holds everything the source had (screenshots wait for it)."""
        self.error: str | None = None
        """Why the feed gave up (None while it runs or after a normal end)."""

    def describe(self) -> str:
        """The endpoint or file this feed reads."""
        raise NotImplementedError

    def start(self, model: DashboardModel) -> None:
        """Start delivering into ``model`` from a daemon thread."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} for {self.describe()} was already started")
        model.source_name = self.describe()
        self._thread = threading.Thread(target=self._guarded, args=(model,), name=f"plstream-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("the %s for %s did not stop within %.1f s", self.name, self.describe(), timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _guarded(self, model: DashboardModel) -> None:
        try:
            self._run(model)
        except Exception as exc:
            logger.exception("the %s for %s failed", self.name, self.describe())
            self.error = f"{type(exc).__name__}: {exc}"
            model.set_connection(False, self.error)

    def _run(self, model: DashboardModel) -> None:
        raise NotImplementedError


class StreamFeed(_Feed):
    """Pulls a running analyzer's results from its live result server.

    Loop: fetch(model.next_request()) → apply; when the reply says ``more``,
    ask again at once; otherwise wait ``poll_interval_s``. A request without
    an answer (``timeout_s``) marks the model disconnected and is retried every
    ``retry_interval_s``; when the server answers again the history continues
    (or, with a new ``session_id``, the model resets and reloads from frame 0).

    Parameters
    ----------
    endpoint : str
        The analyzer's live endpoint, e.g. ``tcp://127.0.0.1:5601``.
    context : zmq.Context, optional
        Shared context; by default the feed makes (and terminates) its own.
    poll_interval_s : float
        Pause between requests once caught up, s.
    timeout_s : float
        How long one request waits for its reply, s.
    retry_interval_s : float
        Pause after an unanswered request, s.
    max_frames : int
        Rows asked for per request.
    security : Security, optional
        Keys for an analyzer on another machine (see :mod:`plstream.stream.security`);
        without it only loopback endpoints can be reached.
    """

    name = "stream-feed"

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        poll_interval_s: float = 0.05,
        *,
        timeout_s: float = 2.0,
        retry_interval_s: float = 1.0,
        max_frames: int = 4096,
        security: Security | None = None,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._security = security
        self._context = context
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_s = float(timeout_s)
        self.retry_interval_s = float(retry_interval_s)
        self.max_frames = int(max_frames)

    def describe(self) -> str:
        return self.endpoint

    def _run(self, model: DashboardModel) -> None:
        from plstream.stream.live.client import LiveResultClient  # imported late: the feed module stays light

        context = self._context if self._context is not None else zmq.Context()
        secured = self._security.on(context) if self._security is not None else None
        try:
            client = LiveResultClient(context, self.endpoint, timeout_s=self.timeout_s, security=secured)
        except BaseException:
            if secured is not None:
                secured.close()
            if self._context is None:
                context.term()
            raise
        try:
            while not self._stop.is_set():
                update = client.fetch(model.next_request(self.max_frames))
                if update is None:
                    model.set_connection(False, f"no answer within {self.timeout_s:g} s")
                    self._stop.wait(self.retry_interval_s)
                    continue
                model.set_connection(True)
                model.apply(update)
                if update.more:
                    continue
                model.metrics()  # refreshed here (at most once a second), not in the GUI thread
                if update.n_frames_total > 0:
                    self.caught_up.set()
                ended = str(update.status.get("state", "")) in ("complete", "interrupted", "error")
                self._stop.wait(max(self.poll_interval_s, self.retry_interval_s) if ended else self.poll_interval_s)
        finally:
            client.close()
            if secured is not None:
                secured.close()
            if self._context is None:
                context.term()


class FileFeed(_Feed):
    """Reads a result file into the model, following it while its writer is still running.

    A finished file is read once. A growing (SWMR) file is polled every
    ``poll_interval_s`` with :class:`~plstream.analysis.result_file.writer.ResultFollower`
    until its writer finishes; its final status then arrives with the last update.

    Parameters
    ----------
    path : str or Path
        The result file (``.h5``).
    poll_interval_s : float
        Seconds between checks for new frames.
    final_status_timeout_s : float
        After the writer's last data, how long to wait for it to write the
        file's final status before calling the run interrupted.
    """

    name = "file-feed"

    def __init__(self, path: str | Path, poll_interval_s: float = 0.5, *, final_status_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.poll_interval_s = float(poll_interval_s)
        self.final_status_timeout_s = float(final_status_timeout_s)

    def describe(self) -> str:
        return str(self.path)

    def _run(self, model: DashboardModel) -> None:
        try:
            follower = ResultFollower(self.path)
        except (ResultFileError, OSError) as exc:
            logger.debug("cannot follow %s (%s); reading it whole", self.path, exc)
            try:
                results = load_results(self.path)
            except (ResultFileError, OSError) as exc2:
                self.error = (exc2.strerror if isinstance(exc2, OSError) else None) or str(exc2)
                model.set_connection(False, self.error)
                return
            model.set_connection(True)
            model.apply(results_to_update(results, n_frames_total=results.n_frames))
            self.caught_up.set()
            return
        try:
            self._follow(model, follower)
        finally:
            follower.close()

    def _follow(self, model: DashboardModel, follower: ResultFollower) -> None:
        have, mean_version, final_wait_from = 0, -1, None
        fresh = True
        while not self._stop.is_set():
            if not fresh:
                fresh = follower.refresh() > 0 or follower.finished
            if fresh:
                results = follower.read(start=have)
                if final_wait_from is not None and results.status == "running":
                    if time.monotonic() - final_wait_from > self.final_status_timeout_s:
                        results = _with_status(results, "interrupted")
                update = results_to_update(results, n_frames_total=follower.n_frames, mean_version=mean_version)
                mean_version = update.mean_version if update.mean_image is not None else mean_version
                model.set_connection(True)
                model.apply(update)
                model.metrics()  # refreshed here (at most once a second), not in the GUI thread
                have = results.first_frame + results.n_frames
                if have >= follower.n_frames:
                    self.caught_up.set()
                if follower.finished:
                    if results.status != "running":
                        return  # read completely, final status known
                    final_wait_from = time.monotonic() if final_wait_from is None else final_wait_from
            fresh = False
            self._stop.wait(self.poll_interval_s)


def _with_status(results: Results, status: str) -> Results:
    summary = dict(results.summary)
    summary.setdefault("error", "the writer stopped without closing the file (crashed?); data end at its last flush")
    return replace(results, status=status, summary=summary)


def _parse_utc(text: Any) -> float | None:
    try:
        return _dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp()
    except ValueError:
        return None


def results_to_update(results: Results, *, n_frames_total: int | None = None, mean_version: int = -1) -> LiveUpdate:
    """A result file's contents (or the part read from ``results.first_frame`` on) as a :class:`LiveUpdate`.

    ``session_id`` is the file's path plus its creation time, so a file
    written anew reads as a new session. The mean image (if the file has
    one) is included when its version (frames read) differs from ``mean_version``.
    """
    attrs, summary, source = results.attrs, results.summary, results.source
    end = results.first_frame + results.n_frames
    total = end if n_frames_total is None else int(n_frames_total)
    file_state = results.status
    state = {"running": "running" if total else "waiting"}.get(file_state, file_state)
    created = _parse_utc(attrs.get("created_utc", ""))
    closed = _parse_utc(attrs.get("closed_utc", "")) if file_state != "running" else None
    elapsed = None if created is None else max(0.0, (closed if closed is not None else time.time()) - created)
    gaps = np.asarray(results.gaps).reshape(-1, 2)
    status = {
        "state": state,
        "message": "; ".join(
            str(t)
            for t in (
                summary.get("error")
                or ("" if file_state in ("complete", "running") else summary.get("end_reason", "")),
                summary.get("losses", ""),
            )
            if t
        ),
        "frames_received": int(summary.get("frames_received", total)),
        "frames_analyzed": int(summary.get("frames_analyzed", total)),
        "frames_failed": int(summary.get("frames_failed", 0)),
        "frames_missing": int(
            summary.get("frames_missing", int((gaps[:, 1] - gaps[:, 0] + 1).sum()) if len(gaps) else 0)
        ),
        "gaps": int(summary.get("gaps", len(gaps))),
        "spots": results.n_spots,
        "source_frames": summary.get("source_frames", source.get("n_frames")),
        "frames_per_second": (total / elapsed) if elapsed else None,
        "elapsed_s": elapsed,
        "lag_s": None,
        "lag_frames": None,
    }
    mean = getattr(results, "mean_image", None)
    shape = source.get("shape") or (list(mean.shape) if mean is not None else None)
    info = {
        "run_uid": str(attrs.get("run_uid", "")),
        "shape": shape,
        "source": source,
        "result_path": str(results.path),
        "frame_rate_hz": source.get("frame_rate_hz"),
        "psf_sigma_px": summary.get("psf_sigma_px"),
        "pixel_size_um": results.pixel_size_um,
        "frame_interval_s": results.frame_interval_s,
    }
    new_mean = mean is not None and total != mean_version
    return LiveUpdate(
        session_id=f"{Path(results.path).resolve()}@{attrs.get('created_utc', '')}",
        info=info,
        status=status,
        first_frame=results.first_frame,
        n_frames_total=total,
        seq=np.asarray(results.seq, np.int64),
        timestamp=np.asarray(results.timestamp, np.float64),
        drift_xy=np.asarray(results.drift_xy, np.float64).reshape(-1, 2),
        intensity=np.asarray(results.intensity, np.float32),
        state=np.asarray(results.state, np.int8),
        spots_x=np.asarray(results.spots_x, np.float64),
        spots_y=np.asarray(results.spots_y, np.float64),
        spots_first_frame=np.asarray(results.spots_first_frame, np.int64),
        mean_image=np.asarray(mean, np.float32) if new_mean else None,
        mean_version=total if mean is not None else -1,
    )
