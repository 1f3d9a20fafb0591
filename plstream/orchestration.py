"""Wiring processes together: a source process publishing, this process analyzing.

``plstream run`` and ``plstream replay`` start the frame source in a separate
(spawned) process that connects a lossless PUSH socket to this process's PULL
socket on 127.0.0.1; this process analyzes and writes the result file. Ctrl-C
sets a stop flag: the source stops, the frames analyzed so far are written, and
the file is closed with status ``interrupted``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import zmq

from plstream.acquire_adapters.base import InputError
from plstream.analysis.results import ResultWriteError
from plstream.analysis.pipeline import AnalysisSession, SessionStatus, StreamSilentError, run_analysis
from plstream.config import Settings
from plstream.sources import SourceSpec, build_source
from plstream.stream import FramePublisher, FrameSubscriber, publish

__all__ = ["AnalysisOutcome", "analyze_stream", "analyze_with_source_process", "stop_on_sigint", "publish_source"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0


@dataclass
class AnalysisOutcome:
    """How an analysis ended."""

    status: str  # "complete" | "interrupted" | "error"
    summary: dict[str, Any]
    output_path: Path
    session_status: SessionStatus
    error: str = ""
    source_counters: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def stop_on_sigint(stop_event: threading.Event) -> Iterator[None]:
    """First Ctrl-C sets ``stop_event`` (a clean stop); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stop_event.is_set():
            raise KeyboardInterrupt
        logger.warning("stopping: finishing the frames already received (Ctrl-C again to abort)")
        stop_event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def publish_source(
    spec: SourceSpec,
    endpoint: str,
    settings: Settings,
    *,
    bind: bool,
    stop_event: Any,
    monitor_endpoint: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Stream one source to ``endpoint`` until it ends or ``stop_event`` is set; returns the counters."""
    source = build_source(spec)
    queue_frames = settings.stream.live_queue_frames if spec.live else None
    with contextlib.closing(source), zmq.Context() as context:
        with FramePublisher(
            context,
            endpoint,
            bind=bind,
            send_hwm=settings.stream.send_hwm,
            # PUSH has no acknowledgement: keep the last frames and the end message
            # deliverable while the analyzer drains its queue (the parent bounds this wait).
            linger_ms=int(settings.stream.peer_timeout_s * 1000),
            monitor_endpoint=monitor_endpoint or None,
        ) as publisher:
            return publish(
                source,
                publisher,
                stop_event=stop_event,
                heartbeat_interval_s=settings.stream.heartbeat_interval_s,
                queue_frames=queue_frames,
                progress=progress,
            )


def _source_process_main(
    spec: SourceSpec, endpoint: str, settings: Settings, stop_event: Any, results: Any
) -> None:
    """Entry point of the spawned source process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=logging.WARNING, format="plstream source: %(levelname)s: %(message)s")
    try:
        counters = publish_source(spec, endpoint, settings, bind=False, stop_event=stop_event)
        results.put(("ok", counters))
    except InputError as exc:
        results.put(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - report anything to the parent as one line
        logger.debug("source process failed", exc_info=True)
        results.put(("error", f"the frame source failed: {type(exc).__name__}: {exc}"))


def analyze_stream(
    subscriber: FrameSubscriber,
    settings: Settings,
    output_path: str | Path,
    *,
    stop_event: threading.Event,
    on_tick: Callable[[SessionStatus], None] | None = None,
    source_alive: Callable[[], bool] | None = None,
) -> AnalysisOutcome:
    """Analyze what ``subscriber`` receives into ``output_path``; always closes the file."""
    session = AnalysisSession(settings, output_path)
    error = ""
    try:
        status = run_analysis(
            subscriber,
            session,
            stop_event=stop_event,
            silence_warning_s=settings.stream.silence_warning_s,
            peer_timeout_s=settings.stream.peer_timeout_s,
            source_alive=source_alive,
            on_tick=on_tick,
        )
        if status == "error":
            error = session.status.end_message or f"the source ended the stream with {session.status.end_reason!r}"
    except (StreamSilentError, ResultWriteError) as exc:
        status, error = "error", str(exc)
    except KeyboardInterrupt:
        status = "interrupted"
    summary = session.close(status)
    return AnalysisOutcome(status, summary, session.output_path, session.status, error)


def analyze_with_source_process(
    spec: SourceSpec,
    settings: Settings,
    output_path: str | Path,
    *,
    on_tick: Callable[[SessionStatus], None] | None = None,
) -> AnalysisOutcome:
    """Run the source in a spawned process and analyze its stream here (``run``, ``replay``)."""
    stop_event = threading.Event()
    mp = multiprocessing.get_context("spawn")
    source_stop = mp.Event()
    results = mp.Queue()
    with zmq.Context() as context, stop_on_sigint(stop_event):
        with FrameSubscriber(
            context,
            "tcp://127.0.0.1:0",
            bind=True,
            pattern="pull",
            max_frame_bytes=int(settings.stream.max_frame_mb * 2**20),
        ) as subscriber:
            process = mp.Process(
                target=_source_process_main,
                args=(spec, subscriber.endpoint, settings, source_stop, results),
                name="plstream-source",
                daemon=True,
            )
            process.start()
            try:
                outcome = analyze_stream(
                    subscriber,
                    settings,
                    output_path,
                    stop_event=stop_event,
                    on_tick=on_tick,
                    source_alive=process.is_alive,
                )
            finally:
                source_stop.set()
                process.join(_JOIN_TIMEOUT_S)
                if process.is_alive():
                    logger.warning("the source process did not stop in %.0f s; terminating it", _JOIN_TIMEOUT_S)
                    process.terminate()
                    process.join(_JOIN_TIMEOUT_S)
    try:
        kind, payload = results.get(timeout=1.0)
    except queue.Empty:
        kind, payload = "unknown", {}
    if kind == "error" and not outcome.error:
        outcome.error = str(payload)
        if outcome.status == "complete":
            outcome.status = "error"
    elif kind == "ok":
        outcome.source_counters = dict(payload)
    return outcome
