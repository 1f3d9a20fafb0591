"""The streaming analysis session: stream messages in, an HDF5 result file out.

:class:`AnalysisSession` has one handler per message kind (start, frame,
heartbeat, end). It decides the camera model (settings > stream metadata >
estimate from the first frames), creates the analyzer and the result writer,
records gaps in the sequence numbers, and keeps counters. A frame that cannot
be analyzed is logged with its sequence number and counted; the analysis goes
on. :func:`run_analysis` drives a session from a subscriber until the stream
ends, the user stops it, or the source falls silent.

With ``live=True`` a session also keeps a :class:`~plstream.stream.live.history.LiveState`
(:attr:`AnalysisSession.live`) that a live result server answers dashboards
from: every result row, the latest frame every ``live.image_interval_s``, the
spot table and the running mean every ``live.mean_interval_s``, and a status
dict (:meth:`AnalysisSession.live_status`). Feeding it costs a row copy per
frame; the analysis never waits for a viewer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import numpy as np

from plstream import __version__
from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.camera import CameraEstimateError, CameraModel, estimate_camera_model, resolve_camera_model
from plstream.analysis.drift_references import DriftReferences, parse_drift_references
from plstream.analysis.intermittency.segmenter import Segmenter, params_from_settings, signal_of
from plstream.analysis.intermittency.summary import summarize
from plstream.analysis.polarity import PolarityDecision, decide_polarity
from plstream.analysis.result_file import FrameRecord, ResultWriteError, ResultWriter
from plstream.analysis.result_file.lock import ensure_unlocked
from plstream.analysis.result_file.writer import check_destination
from plstream.analysis.resume import ResumePoint, iter_saved_rows
from plstream.analysis.sanity import result_warnings
from plstream.analysis.signal import SignalModel, signal_model
from plstream.analysis.warmup import warm_up
from plstream.config import Settings
from plstream.stream.live.feed import LiveFeed
from plstream.stream.live.history import LiveState
from plstream.stream.log_limit import LimitedLog
from plstream.stream.messages import EndMessage, FrameMessage, HeartbeatMessage, StartMessage
from plstream.stream.sequence import FrameVerdict, SequenceTracker, describe_losses

__all__ = ["AnalysisError", "AnalysisSession", "SessionStatus", "StreamSilentError", "run_analysis"]

logger = logging.getLogger(__name__)

_SPOT_TABLE_INTERVAL_S = 0.5
_GAPS_IN_SUMMARY = 100
_MIN_FRAMES_FOR_ESTIMATE = 10


SOURCE_DIED = "the source process exited without ending the stream"


class StreamSilentError(RuntimeError):
    """The source stopped sending (no frames, no heartbeats) for longer than allowed."""


class AnalysisError(RuntimeError):
    """A stream that cannot be analyzed at all (e.g. frames too small); the message says why."""


class _Subscriber(Protocol):
    counters: dict[str, int]

    def receive(self, timeout_s: float) -> Any: ...

    def send_ready(self, run_uid: str) -> bool: ...

    def send_heartbeat(self, run_uid: str, frames_received: int) -> bool: ...

    def send_done(self, run_uid: str, frames_received: int) -> bool: ...


@dataclass
class SessionStatus:
    """Live counters of a session (read by the progress line)."""

    frames_received: int = 0
    frames_analyzed: int = 0
    frames_failed: int = 0
    frames_missing: int = 0
    gaps: int = 0
    spots: int = 0
    drift_xy: tuple[float, float] = (0.0, 0.0)
    started_at: float = field(default_factory=time.monotonic)
    source_frames: int | None = None
    ended: bool = False
    end_reason: str = ""
    end_message: str = ""
    frames_before: int = 0
    """Frames analyzed before this session (a resumed analysis); the counters include them."""

    def frames_per_second(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return (self.frames_analyzed - self.frames_before) / elapsed if elapsed > 0 else 0.0

    def counters(self) -> dict[str, int | None]:
        """The frame and spot counters, as stored in the result summary and served to dashboards."""
        return {
            "frames_received": self.frames_received,
            "frames_analyzed": self.frames_analyzed,
            "frames_failed": self.frames_failed,
            "frames_missing": self.frames_missing,
            "gaps": self.gaps,
            "spots": self.spots,
            "source_frames": self.source_frames,
        }


class AnalysisSession:
    """Turns the messages of one stream into a result file.

    Parameters
    ----------
    settings : Settings
        Effective settings (stored in the result file).
    output_path : path
        Result file to create.
    live : bool
        Keep a :class:`LiveState` for live viewers (:attr:`live`); off by default.
    warm_up : bool
        When a run starts, run the analysis on synthetic frames of its shape
        and pixel type before saying it is ready (:meth:`is_ready`), so that
        no kernel compiles while frames arrive (see :mod:`~plstream.analysis.warmup`).
    on_event : callable, optional
        Called with a short sentence when the session starts preparing a run
        and when it is ready (e.g. to tell the user at the command line).
    resume : ResumePoint, optional
        Continue the analysis saved in ``output_path`` (see
        :mod:`~plstream.analysis.resume`): the stream's frames before
        ``resume.next_seq`` count as done, the analyzer starts from the saved
        state and the rows are appended to the file.
    """

    def __init__(
        self,
        settings: Settings,
        output_path: str | Path,
        *,
        live: bool = False,
        warm_up: bool = True,
        on_event: Callable[[str], None] | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        self._settings = settings
        self._resume = resume
        self._warm_up = warm_up
        self._on_event = on_event
        self._ready_runs: set[str] = set()
        self._output_path = Path(output_path)
        self.status = SessionStatus()
        self._source: dict[str, Any] = {}
        self._sequence = SequenceTracker()
        self._started = False
        self._gaps_written = -1  # the tracker's gaps_version last handed to the writer
        self._analyzer: StreamingAnalyzer | None = None
        self._writer: ResultWriter | None = None
        self._camera: CameraModel | None = None
        self._signal: SignalModel | None = None
        self._polarity: PolarityDecision | None = None
        self._camera_note = ""  # why the camera model is unknown (the run then works in ADU)
        self._references: DriftReferences | None = None
        self._pending: list[FrameMessage] = []
        self._source_counters: dict[str, Any] = {}
        self._extra_summary: dict[str, Any] = {}
        self._camera_ids: dict[int, int] = {}  # seq -> the camera's frame number, until its row is written
        self._last_spot_table = 0.0
        self._segmenter: Segmenter | None = None  # the refined blinking states, fed with every row
        self._segment_signal = signal_of(settings.blinking)
        self._closed = False
        self._live_feed = LiveFeed(self.status, self._output_path, settings) if live else None
        self._log = LimitedLog(logger)  # gaps and dropped frames can come by the thousand: a few lines per 5 s
        if resume is not None:
            self._continue(resume)

    def _continue(self, resume: ResumePoint) -> None:
        """Count what the saved analysis did as done: frames, gaps, spots, the camera model."""
        self._sequence.continue_from(resume.next_seq, resume.gaps)
        s = self.status
        s.frames_received = s.frames_analyzed = s.frames_before = resume.frames
        s.frames_failed = int(resume.previous_summary.get("frames_failed", 0) or 0)
        s.spots = len(resume.analyzer.spots_xy)
        s.gaps, s.frames_missing = len(self._sequence.gaps), self._sequence.frames_missing
        self._gaps_written = self._sequence.gaps_version
        self._camera = resume.camera

    # ------------------------------------------------------------------ dispatch
    def handle(self, message: Any) -> bool:
        """Handle one message; returns True when the stream has ended."""
        if not isinstance(message, (FrameMessage, StartMessage, EndMessage, HeartbeatMessage)):
            self._log.warning("unknown message", "ignoring a message of unknown type %s", type(message).__name__)
            return self.status.ended
        verdict = self._sequence.observe(message)
        if isinstance(message, FrameMessage):
            self._on_frame(message, verdict)
        elif isinstance(message, StartMessage):
            self._on_start(message)
        elif isinstance(message, EndMessage):
            self._on_end(message)
        self._record_gaps()
        return self.status.ended

    @property
    def sequence(self) -> SequenceTracker:
        """Which frames of the run arrived and which are missing (the one place that knows)."""
        return self._sequence

    @property
    def camera(self) -> CameraModel | None:
        """The camera model (offset, gain, read noise); None when it could not be known (results in ADU)."""
        return self._camera

    @property
    def signal(self) -> SignalModel | None:
        """How raw frames are turned into the analysis's units (polarity, noise model, output units)."""
        return self._signal

    @property
    def analyzer(self) -> StreamingAnalyzer | None:
        return self._analyzer

    @property
    def output_path(self) -> Path:
        return self._output_path

    @property
    def live(self) -> LiveState | None:
        """What live viewers are served (``None`` unless the session was made with ``live=True``)."""
        return self._live_feed.state if self._live_feed is not None else None

    def live_status(self) -> dict[str, Any]:
        """The ``LiveUpdate.status`` dict now (state, counters, rates, lag); safe from any thread."""
        if self._live_feed is None:
            raise RuntimeError("live_status() needs a session made with live=True")
        return self._live_feed.status()

    # ------------------------------------------------------------------ handlers
    def _on_start(self, message: StartMessage) -> None:
        if message.run_uid != self._sequence.run_uid:
            logger.warning(
                "a new run (%s) started on the stream while run %s was being analyzed; "
                "its frames are ignored. Start a new analysis for it.",
                message.run_uid,
                self._sequence.run_uid,
            )
            return
        self._started = True
        self._source = dict(message.source)
        n = self._source.get("n_frames")
        self.status.source_frames = int(n) if isinstance(n, int) else None
        logger.info("stream started: %s, frames %s, %s", self._source.get("source", "?"), message.shape, message.dtype)
        if self._live_feed is not None:
            self._live_feed.describe_run(message.run_uid, message.shape, self._source, self.units())
        self._prepare(message)

    def _prepare(self, message: StartMessage) -> None:
        """Check the output and compile the analysis for the run's frames; then the run is ready."""
        try:
            if self._resume is None:
                check_destination(self._output_path, self._settings.output.overwrite)
            else:
                ensure_unlocked(self._output_path)
        except OSError as exc:
            raise ResultWriteError(str(exc), path=self._output_path) from exc
        if self._resume is not None and tuple(message.shape) != self._resume.shape:
            raise AnalysisError(
                f"the stream's frames are {tuple(message.shape)}, but {self._output_path} holds the analysis of "
                f"{self._resume.shape} frames: resume it with the movie it was made from"
            )
        if self._warm_up:
            rows, cols = message.shape
            self._tell(
                f"preparing the analysis of {rows}x{cols} {message.dtype} frames "
                "(kernels are compiled once, then cached)..."
            )
            try:
                elapsed = warm_up(self._settings, message.shape, message.dtype)
            except ValueError as exc:
                raise AnalysisError(f"the frames of this stream cannot be analyzed: {exc}") from exc
            self._tell(f"analysis ready in {elapsed:.1f} s")
        self._ready_runs.add(message.run_uid)

    def _tell(self, sentence: str) -> None:
        logger.info("%s", sentence)
        if self._on_event is not None:
            self._on_event(sentence)

    def is_ready(self, run_uid: str) -> bool:
        """Whether the session is ready for the frames of ``run_uid`` (its start was handled and prepared)."""
        return run_uid in self._ready_runs

    def _on_frame(self, message: FrameMessage, verdict: FrameVerdict | None) -> None:
        if verdict is None or not verdict.accepted:
            if verdict in (FrameVerdict.DUPLICATE, FrameVerdict.IMPLAUSIBLE):
                self._log.warning("dropped frame", "frame %d dropped: %s", message.seq, verdict.value)
            return
        if self.status.frames_received == 0 and not self._started:
            logger.warning("joined the stream mid-run at frame %d (its start message was missed)", message.seq)
            if self._live_feed is not None:
                self._live_feed.describe_run(message.run_uid, message.data.shape, {})
        self.status.frames_received += 1
        if self._analyzer is None:
            # Frame data may live in a receive buffer: keep a copy until the camera model is known.
            self._pending.append(FrameMessage(**{**message.__dict__, "data": np.array(message.data)}))
            if self._camera_ready() or len(self._pending) >= self._settings.camera.estimate_frames:
                self._start_analysis()
            return
        self._analyze(message)

    def _on_end(self, message: EndMessage) -> None:
        if message.run_uid != self._sequence.run_uid:
            return
        if self._analyzer is None and self._pending:
            self._start_analysis()
        self.status.ended = True
        self.status.end_reason = message.reason
        self.status.end_message = message.message
        self.status.source_frames = message.n_frames
        self._source_counters = dict(message.counters)
        logger.info("stream ended (%s) after %d frames from the source", message.reason, message.n_frames)

    # ------------------------------------------------------------------ helpers
    def _record_gaps(self) -> None:
        """Hand the tracker's gap list to the counters and the writer when it changed."""
        sequence = self._sequence
        if sequence.gaps_version == self._gaps_written:
            return
        if sequence.frames_missing > self.status.frames_missing:
            first, last = sequence.gaps[-1] if sequence.gaps else (0, -1)
            self._log.info("gap", "frames %d-%d never arrived; recorded as a gap", first, last)
        self.status.gaps = len(sequence.gaps)
        self.status.frames_missing = sequence.frames_missing
        if self._writer is not None:
            self._writer.set_gaps(sequence.gaps)
            self._gaps_written = sequence.gaps_version

    def _camera_ready(self) -> bool:
        if self._resume is not None:
            return True
        try:
            resolve_camera_model(self._source.get("camera"), self._camera_config(), None)
        except ValueError:
            return False
        return True

    def _camera_config(self) -> dict[str, float | None]:
        """Camera values from the settings; read noise falls back to the assumed value, never to an estimate."""
        c = self._settings.camera
        read_noise = c.read_noise_e
        if read_noise is None and not (self._source.get("camera") or {}).get("read_noise_e"):
            read_noise = c.assumed_read_noise_e
        return {"offset_adu": c.offset_adu, "gain_adu_per_e": c.gain_adu_per_e, "read_noise_e": read_noise}

    def _start_analysis(self) -> None:
        frames = self._pending
        shape = tuple(frames[0].data.shape)
        first = [f.data for f in frames]
        if self._resume is not None:  # the camera is the run's own; refined blinking states are not resumed
            self._camera = self._resume.camera
            self._polarity = decide_polarity(self._settings.detection.polarity, first[:3])
            self._signal = signal_model(self._camera, self._polarity.polarity, first)
            self._start_resumed(self._resume, (shape[0], shape[1]))
            frames, self._pending = self._pending, []
            for message in frames:
                self._analyze(message)
            return
        self._camera = self._resolve_camera(first)
        self._polarity = decide_polarity(self._settings.detection.polarity, first[:3])
        self._signal = signal_model(self._camera, self._polarity.polarity, first)
        if self._polarity.polarity == "dark" or self._signal.units != "photons":
            self._tell(
                f"particles {self._polarity.polarity} ({self._polarity.reason}); results in {self._signal.units}"
            )
        if self._camera is not None:
            logger.info(
                "camera: offset %.2f ADU, gain %.4f ADU/e-, read noise %.2f e- (%s)",
                self._camera.offset_adu,
                self._camera.gain_adu_per_e,
                self._camera.read_noise_e,
                ", ".join(f"{k}: {v}" for k, v in self._camera.origin.items()),
            )
        self._analyzer = StreamingAnalyzer(self._settings, shape, self._camera, signal=self._signal)
        self._references = parse_drift_references(self._settings.drift.reference_spots)
        if self._references is not None:
            if self._references.ids:
                self._analyzer.set_drift_spots(np.asarray(self._references.ids))
            else:
                self._analyzer.set_reference_boxes(self._references.boxes)
            logger.info("the drift is measured by the particles of %s", self._references.source)
        self._segmenter = Segmenter(params_from_settings(self._settings.blinking))
        self._writer = ResultWriter(
            self._output_path,
            run_info={
                "settings_json": self._settings.to_json(),
                "source_json": json.dumps(self._source, default=str),
                "camera_json": json.dumps(self._camera_description()),
                "units_json": json.dumps(self.units()),
                "analysis_json": json.dumps(self.analysis_description()),
                "run_uid": self._sequence.run_uid or "",
            },
            signal_units=self._signal.units,
            flush_interval_s=self._settings.output.flush_interval_s,
            overwrite=self._settings.output.overwrite,
            frame_shape=shape,
        )
        self._gaps_written = -1
        self._record_gaps()
        self._pending = []
        for message in frames:
            self._analyze(message)

    def _resolve_camera(self, frames: list[np.ndarray]) -> CameraModel | None:
        """Settings > stream metadata > photon-transfer estimate; None when none of them can say (work in ADU)."""

        def estimate() -> CameraModel:
            if len(frames) < _MIN_FRAMES_FOR_ESTIMATE:
                raise CameraEstimateError(
                    f"only {len(frames)} frames arrived, too few to estimate the camera offset and gain "
                    f"({_MIN_FRAMES_FOR_ESTIMATE} needed)"
                )
            logger.info("estimating camera offset and gain from the first %d frames", len(frames))
            return estimate_camera_model(
                np.stack(frames), assumed_read_noise_e=self._settings.camera.assumed_read_noise_e, fallback=False
            )

        try:
            return resolve_camera_model(self._source.get("camera"), self._camera_config(), estimate)
        except CameraEstimateError as exc:
            self._camera_note = str(exc)
            logger.warning(
                "%s; working in ADU with the pixel noise measured from the frames (intensities are in ADU, not "
                "photons). Set camera.offset_adu and camera.gain_adu_per_e to work in photons.",
                exc,
            )
            return None

    def _camera_description(self) -> dict[str, Any]:
        """``camera_json``: the camera model, or why there is none and the noise model used instead."""
        assert self._signal is not None
        if self._camera is not None:
            return {**self._camera.to_dict(), "units": self._signal.units}
        return {
            "offset_adu": None,
            "gain_adu_per_e": None,
            "read_noise_e": None,
            "origin": "unknown: " + self._camera_note,
            "units": self._signal.units,
            "noise_model": self._signal.noise,
            "noise_adu": self._signal.noise_adu,
            "noise_origin": "measured from the frames (robust spatial estimate)",
        }

    def analysis_description(self) -> dict[str, Any]:
        """``analysis_json``: what the analysis decided about the data (polarity, signal and noise model)."""
        out: dict[str, Any] = {}
        if self._polarity is not None:
            out.update(self._polarity.to_dict())
        if self._signal is not None:
            out["signal"] = self._signal.to_dict()
            out["units"] = self._signal.units
        if self._analyzer is not None:
            out["rotation_center_xy"] = list(self._analyzer.rotation_center)
        if self._references is not None:
            out["drift_references"] = self._references.to_dict()
        return out

    def _start_resumed(self, resume: ResumePoint, shape: tuple[int, int]) -> None:
        """The analyzer from the saved state, the writer appending to the saved file, the live view caught up."""
        assert self._camera is not None
        self._analyzer = StreamingAnalyzer(self._settings, shape, self._camera, signal=self._signal)
        self._analyzer.restore(resume.analyzer)
        self._writer = ResultWriter(
            self._output_path,
            run_info={
                "run_uid": self._sequence.run_uid or "",
                "from_frame": str(resume.frames),
                "from_seq": str(resume.next_seq),
                "previous_status": resume.previous_status,
            },
            flush_interval_s=self._settings.output.flush_interval_s,
            resume=True,
        )
        if self._live_feed is not None:
            for row in iter_saved_rows(resume.path, resume.frames):
                self._live_feed.state.append(row)
        self._tell(resume.describe())

    def _analyze(self, message: FrameMessage) -> None:
        assert self._analyzer is not None and self._writer is not None
        camera_id = _camera_frame_id(message.metadata)
        if camera_id is not None:
            self._camera_ids[message.seq] = camera_id  # its row may come out a few frames later
        try:
            records = self._analyzer.process(message.seq, message.timestamp, message.data)
        except (ValueError, ArithmeticError, IndexError) as exc:
            self.status.frames_failed += 1
            self._camera_ids.pop(message.seq, None)
            logger.error("frame %d could not be analyzed and is skipped: %s", message.seq, exc)
            return
        for record in records:
            self._append(record)
        self._after_frame(message)

    def _append(self, record: FrameRecord) -> None:
        """One result row to the file and the live history, with the camera's frame number when known."""
        assert self._writer is not None
        camera_id = self._camera_ids.pop(record.seq, None)
        if camera_id is not None:
            record = dataclasses.replace(record, camera_frame_id=camera_id)
        if self._segmenter is not None:
            provisional = self._segmenter.push(
                record.seq, getattr(record, self._segment_signal), record.state, record.background
            )
            record = dataclasses.replace(record, segmented=provisional)
        self._writer.append(record)
        if self._live_feed is not None:
            self._live_feed.state.append(record)

    def _after_frame(self, message: FrameMessage) -> None:
        """Counters, the spot table and mean now and then, and the live view after each analyzed frame."""
        assert self._analyzer is not None
        self.status.frames_analyzed += 1
        self.status.spots = len(self._analyzer.spots)
        drift = self._analyzer.drift
        self.status.drift_xy = (float(drift[0]), float(drift[1]))
        now = time.monotonic()
        mean = None
        if now - self._last_spot_table >= _SPOT_TABLE_INTERVAL_S:
            mean = self._write_spot_table()
            self._last_spot_table = now
        if self._live_feed is not None:
            self._live_feed.on_frame(message, self._analyzer.spots, mean, self._measured_psf_sigma())

    def _measured_psf_sigma(self) -> float | None:
        """The PSF width once measured from the data (px), else None."""
        assert self._analyzer is not None
        return float(self._analyzer.geometry.psf_sigma_px) if self._analyzer.psf_sigma_measured else None

    def _write_spot_table(self) -> np.ndarray:
        """Hand the spot table and the running mean to the writer; returns that mean (live viewers get it too)."""
        assert self._analyzer is not None and self._writer is not None
        spots = self._analyzer.spots
        self._writer.set_spots(spots.xy[:, 0].copy(), spots.xy[:, 1].copy(), spots.first_frame.copy())
        self._hand_over_blinking()
        mean = self._analyzer.running_mean()
        self._writer.set_mean_image(mean)
        return mean

    def _hand_over_blinking(self, spot_stats: np.ndarray | None = None) -> None:
        """The final refined states decided since the last call, the levels and how far they are final."""
        seg = self._segmenter
        if seg is None or self._writer is None:
            return
        self._writer.set_blinking(
            runs=seg.take_runs(), levels=seg.levels(), final_frames=seg.final_frames(), spot_stats=spot_stats
        )

    def _finish_blinking(self) -> None:
        """All refined states final; per-spot statistics and the ensemble fits to the writer.

        A failure here is logged and costs only the statistics, never the run's results.
        """
        seg = self._segmenter
        if seg is None or self._writer is None:
            return
        seg.finish()
        try:
            started = time.monotonic()
            blinking = summarize(
                seg,
                bleach_min_frames=self._settings.blinking.bleach_min_frames,
                frame_interval_s=self.units().get("frame_interval_s"),
            )
            self._hand_over_blinking(blinking.spot_stats)
            self._writer.set_ensemble(blinking.ensemble_attrs())
            logger.info("blinking statistics of %d spots in %.1f s", seg.n_spots, time.monotonic() - started)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            logger.error("the blinking statistics could not be computed (the results are kept): %s", exc)
            self._hand_over_blinking()

    # ------------------------------------------------------------------ end
    def close(self, status: str, message: str = "", *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the result file with ``status`` ("complete", "interrupted", "error"); returns the summary.

        ``message`` says why the run ended (for ``"error"``); live viewers get it
        with the final state, which they see only after the last rows.
        ``extra`` adds entries to the summary (e.g. a recording's counters).
        """
        if self._closed:
            return self.summary()
        self._closed = True
        self._log.flush()
        self._extra_summary = dict(extra or {})
        try:
            if self._analyzer is None and self._pending:
                try:
                    self._start_analysis()
                except ValueError as exc:
                    logger.error("%s", exc)
            summary = self.summary()
            if self._writer is not None:
                assert self._analyzer is not None
                try:
                    if self._writer.failed:  # nothing more goes to a file whose writing failed
                        mean = self._analyzer.running_mean()
                    else:
                        for record in self._analyzer.finish():
                            self._append(record)
                        mean = self._write_spot_table()
                        self._finish_blinking()
                    if self._live_feed is not None:
                        self._live_feed.publish_tables(self._analyzer.spots, mean, self._measured_psf_sigma())
                finally:  # always: it releases the file (and raises a write error not raised before)
                    self._writer.close(status, summary, status_text=self.status_text(status, message))
        except Exception as exc:
            if self._live_feed is not None:
                self._live_feed.finish("error", f"the analysis could not be finished: {exc}")
            raise
        if self._live_feed is not None:
            self._live_feed.finish(status, "; ".join(t for t in (message, summary["losses"]) if t))
        return summary

    def losses(self) -> str:
        """The frames this run lost, in words ("" when none): never arrived, or could not be analyzed."""
        s = self.status
        return describe_losses(s.frames_missing, s.gaps, self._sequence.gaps, s.frames_failed)

    def status_text(self, status: str, message: str = "") -> str:
        """``status`` with what was lost and why it ended.

        E.g. ``"complete, 697 frames lost in 1 gap (frames 3-699)"``.
        """
        text = ", ".join(t for t in (status, self.losses()) if t)
        return f"{text}: {message}" if message else text

    def units(self) -> dict[str, Any]:
        """Physical units of the run: pixel size (µm) and frame interval (s), each with where it came from.

        Settings (``camera.pixel_size_um``, ``camera.frame_interval_s``) win over
        what the source says (camera or file metadata); None when neither knows.
        """
        camera = self._settings.camera
        source = self._source
        rate: Any = source.get("frame_rate_hz")
        from_rate = 1.0 / float(rate) if _positive(rate) else None
        out: dict[str, Any] = {"origin": {}}
        candidates: tuple[tuple[str, float | None, Any], ...] = (
            ("pixel_size_um", camera.pixel_size_um, source.get("pixel_size_um")),
            ("frame_interval_s", camera.frame_interval_s, source.get("frame_interval_s") or from_rate),
        )
        for key, configured, described in candidates:
            if configured is not None:
                out[key], out["origin"][key] = float(configured), "settings"
            elif _positive(described):
                out[key], out["origin"][key] = float(described), "source"
            else:
                out[key] = None
        return out

    def summary(self) -> dict[str, Any]:
        s = self.status
        out: dict[str, Any] = {
            "plstream_version": __version__,
            **s.counters(),
            "end_reason": s.end_reason,
            "source_counters": self._source_counters,
        }
        out.update(self._extra_summary)
        out["losses"] = self.losses()
        out["gap_ranges"] = [list(g) for g in self._sequence.gaps[:_GAPS_IN_SUMMARY]]  # all of them: /stream/gaps
        out["sequence_counters"] = dict(self._sequence.counters)
        if self._analyzer is not None:
            analyzer = self._analyzer
            out["psf_sigma_px"] = analyzer.geometry.psf_sigma_px
            out["drift_methods"] = dict(analyzer.method_counts)
            out["fits_made"] = analyzer.fits_made
            out["fits_succeeded"] = analyzer.fits_succeeded
            out["warnings"] = result_warnings(
                n_spots=len(analyzer.spots),
                frames=analyzer.frames_analyzed,
                shape=analyzer.shape,
                fits_made=analyzer.fits_made,
                fits_succeeded=analyzer.fits_succeeded,
                method_counts=analyzer.method_counts,
                analyzer_warnings=analyzer.warnings,
            )
        if self._signal is not None:
            out["units"] = self._signal.units
            out["polarity"] = self._signal.polarity
            if self._polarity is not None:
                out["polarity_origin"] = self._polarity.origin
        if self._resume is not None:
            out["resumed"] = {
                "from_frame": self._resume.frames,
                "from_seq": self._resume.next_seq,
                "previous_status": self._resume.previous_status,
                "previous_summary": self._resume.previous_summary,
            }
        return out


def _positive(value: Any) -> TypeGuard[float]:
    """A finite number > 0 (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def run_analysis(
    subscriber: _Subscriber,
    session: AnalysisSession,
    *,
    stop_event: threading.Event | None = None,
    silence_warning_s: float = 5.0,
    peer_timeout_s: float = 60.0,
    source_alive: Callable[[], bool] | None = None,
    on_tick: Callable[[SessionStatus], None] | None = None,
    poll_s: float = 0.2,
    heartbeat_interval_s: float = 1.0,
) -> str:
    """Receive and analyze until the stream ends; returns the end status for the result file.

    The source is answered: ``ready`` once the session has prepared a run it
    started, and a consumer heartbeat every ``heartbeat_interval_s``.

    Returns ``"complete"`` when the source ended the stream normally,
    ``"interrupted"`` when ``stop_event`` was set or the source was stopped, and
    raises :class:`StreamSilentError` when the source went silent for
    ``peer_timeout_s`` or its process died without ending the stream.
    """
    last_message = last_beat = time.monotonic()
    warned = False
    while True:
        if stop_event is not None and stop_event.is_set():
            return "interrupted"
        message = subscriber.receive(poll_s)
        now = time.monotonic()
        run_uid = session.sequence.run_uid
        if run_uid is not None and session.is_ready(run_uid) and now - last_beat >= heartbeat_interval_s:
            subscriber.send_heartbeat(run_uid, session.status.frames_received)
            last_beat = now
        if message is None:
            silent = now - last_message
            if source_alive is not None and not source_alive() and silent > 1.0:
                raise StreamSilentError(SOURCE_DIED)
            if silent > peer_timeout_s:
                raise StreamSilentError(
                    f"no frames or heartbeats from the source for {silent:.0f} s; is it still running? "
                    "(stream.peer_timeout_s sets this limit)"
                )
            if silent > silence_warning_s and not warned:
                logger.warning("the source has been silent for %.0f s; waiting", silent)
                warned = True
        else:
            last_message = now
            warned = False
            ended = session.handle(message)
            if isinstance(message, StartMessage) and session.is_ready(message.run_uid):
                subscriber.send_ready(message.run_uid)
            if ended:
                subscriber.send_done(message.run_uid, session.status.frames_received)
                if on_tick is not None:
                    on_tick(session.status)
                reason = session.status.end_reason
                return {"complete": "complete", "stopped": "interrupted"}.get(reason, "error")
        if on_tick is not None:
            on_tick(session.status)


def _camera_frame_id(metadata: dict[str, Any]) -> int | None:
    """The camera's own number of a frame, from its metadata.

    GenICam cameras give ``camera_frame_id``, Micro-Manager ``image_number``; None when neither is there.
    """
    for key in ("camera_frame_id", "image_number"):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
            return value
    return None
