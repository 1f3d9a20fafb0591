"""Wiring processes together: a source process publishing, this process analyzing.

``plstream run`` and ``plstream replay`` start the frame source in a separate
(spawned) process that connects a lossless PUSH socket to this process's PULL
socket (IPC in a private folder, or TCP on 127.0.0.1); this process analyzes
and writes the result file. Ctrl-C sets a stop flag: the source stops, the
frames analyzed so far are written, and the file is closed with status
``interrupted``.

Given a ``live_endpoint``, the analysis also serves its results to dashboards
there (:class:`~plstream.stream.LiveResultServer` over the session's
:class:`~plstream.stream.live.history.LiveState`) from before the first frame
until ``linger_s`` after the result file is closed, so a connected dashboard
sees the final state.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from plstream.acquire_adapters.base import FrameSource, InputError
from plstream.analysis.result_file import ResultWriteError
from plstream.analysis.resume import ResumePoint
from plstream.analysis.session import SOURCE_DIED as _SOURCE_DIED
from plstream.analysis.session import (
    AnalysisError,
    AnalysisSession,
    SessionStatus,
    StreamSilentError,
    run_analysis,
)
from plstream.config import Settings
from plstream.lifecycle import die_with_parent, private_folder, stop_on_signals
from plstream.recording import RecordedSource, RecordingPlan, RecordingSubscriber
from plstream.source_spec import SourceSpec, build_source
from plstream.stream import FramePublisher, FrameSubscriber, LiveResultServer, publish
from plstream.stream.messages import EndMessage
from plstream.stream.security import Security, SocketSecurity

__all__ = [
    "AnalysisOutcome",
    "analyze_stream",
    "analyze_with_source_process",
    "publish_source",
    "stop_on_sigint",
    "stop_on_signals",
]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0
_KILL_WAIT_S = 3.0


@dataclass
class AnalysisOutcome:
    """How an analysis ended."""

    status: str  # "complete" | "interrupted" | "error"
    summary: dict[str, Any]
    output_path: Path
    session_status: SessionStatus
    error: str = ""
    source_counters: dict[str, Any] = field(default_factory=dict)


def stop_on_sigint(stop_event: threading.Event) -> contextlib.AbstractContextManager[None]:
    """Ctrl-C, SIGTERM and SIGHUP set ``stop_event`` (a clean stop); a second one interrupts at once.

    The name predates SIGTERM and SIGHUP; see :func:`plstream.lifecycle.stop_on_signals`.
    """
    return stop_on_signals(stop_event)


@contextlib.contextmanager
def _secured(context: zmq.Context, security: Security | None) -> Iterator[SocketSecurity | None]:
    """The context's :class:`SocketSecurity` under ``security`` (None: loopback endpoints only)."""
    if security is None:
        yield None
        return
    with security.on(context) as secured:
        yield secured


def publish_source(
    spec: SourceSpec,
    endpoint: str,
    settings: Settings,
    *,
    bind: bool,
    stop_event: Any,
    monitor_endpoint: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_waiting: Callable[[float], None] | None = None,
    recording: RecordingPlan | None = None,
    record_beside: Path | None = None,
    security: Security | None = None,
) -> dict[str, Any]:
    """Stream one source to ``endpoint`` until it ends or ``stop_event`` is set; returns the counters.

    The source is opened (a camera configured) first; its frames flow only
    once the analyzer said it is ready (``on_waiting`` is told how long that
    takes, about once a second). With a ``recording`` plan that wants this
    source, every frame taken from it is also recorded (to the plan's path,
    else ``record_beside``) before it goes to the network. ``security``
    encrypts the endpoints other machines can reach (without it, only
    loopback and ipc endpoints are allowed).
    """
    source: FrameSource = build_source(spec)
    description = source.describe()
    if recording is not None and recording.wanted(spec.kind):
        source = RecordedSource(source, recording, record_beside or Path("plstream-recording.raw.ome.tif"))
    live = spec.live or bool(description.get("live"))
    queue_frames = _live_queue_frames(settings, description) if live else None
    with contextlib.closing(source), zmq.Context() as context, _secured(context, security) as secured:
        with FramePublisher(
            context,
            endpoint,
            bind=bind,
            send_hwm=settings.stream.send_hwm,
            # Nothing acknowledges a frame: keep the last frames and the end message
            # deliverable while the analyzer drains its queue (the parent bounds this wait).
            linger_ms=int(settings.stream.peer_timeout_s * 1000),
            monitor_endpoint=monitor_endpoint or None,
            security=secured,
        ) as publisher:
            ended = False
            try:
                counters = publish(
                    source,
                    publisher,
                    stop_event=stop_event,
                    heartbeat_interval_s=settings.stream.heartbeat_interval_s,
                    queue_frames=queue_frames,
                    progress=progress,
                    ready_timeout_s=settings.stream.ready_timeout_s,
                    on_waiting=on_waiting,
                    max_frames=spec.max_frames,
                    peer_timeout_s=settings.stream.peer_timeout_s,
                    first_seq=spec.first_seq,
                )
                ended = not stop_event.is_set()
                return counters
            finally:
                if not ended:  # stopped, failed, or the consumer is gone: nothing queued is worth waiting for
                    publisher.close(linger_ms=0)


def _live_queue_frames(settings: Settings, description: dict[str, Any]) -> int:
    """How many frames a live source may queue: ``stream.live_queue_frames``, and no more than ``live_queue_mb``."""
    try:
        rows, cols = (int(n) for n in description["shape"])
        frame_bytes = rows * cols * np.dtype(description["dtype"]).itemsize
    except (KeyError, TypeError, ValueError):
        return settings.stream.live_queue_frames
    by_memory = int(settings.stream.live_queue_mb * 2**20 // max(frame_bytes, 1))
    return max(2, min(settings.stream.live_queue_frames, by_memory))


class _StopFlag:
    """The source process's stop request: set by its parent (``event``) or, lock-free, by a signal handler here."""

    def __init__(self, event: Any) -> None:
        self._event = event
        self._local = False

    def set(self) -> None:
        self._local = True

    def is_set(self) -> bool:
        return self._local or bool(self._event.is_set())


def _source_process_main(
    spec: SourceSpec,
    endpoint: str,
    settings: Settings,
    stop_event: Any,
    results: Any,
    parent_pid: int | None = None,
    folder: str = "",
) -> None:
    """Entry point of the spawned source process; it stops when its parent (``parent_pid``) is gone.

    ``folder`` is the parent's private IPC folder: removed here if the parent
    died without removing it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=logging.WARNING, format="plstream source: %(levelname)s: %(message)s")
    stop = _StopFlag(stop_event)

    def remove_orphaned_folder() -> None:
        if folder and parent_pid is not None and os.getppid() != parent_pid:
            shutil.rmtree(folder, ignore_errors=True)  # its owner was killed before it could

    if parent_pid is not None:

        def parent_gone() -> None:
            stop.set()
            remove_orphaned_folder()

        die_with_parent(parent_pid, parent_gone)
    try:
        counters = publish_source(spec, endpoint, settings, bind=False, stop_event=stop)
        results.put(("ok", counters))
    except InputError as exc:
        results.put(("error", str(exc)))
    except Exception as exc:
        logger.debug("source process failed", exc_info=True)
        results.put(("error", f"the frame source failed: {type(exc).__name__}: {exc}"))
    # The source is closed and the sockets are gone: hand the result over and leave at once (the
    # interpreter's own teardown, with numba loaded, takes about a second that the parent would wait).
    remove_orphaned_folder()
    results.close()
    results.join_thread()
    logging.shutdown()
    os._exit(0)


@contextlib.contextmanager
def _serving_live_results(
    context: zmq.Context,
    session: AnalysisSession,
    endpoint: str,
    settings: Settings,
    *,
    on_live_ready: Callable[[str], None] | None,
    linger_s: float,
    security: SocketSecurity | None,
    skip_linger: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """Serve ``session.live`` on ``endpoint`` for the duration of the block, then ``linger_s`` more.

    Raises :class:`~plstream.stream.LiveEndpointError` (an OSError) when the
    endpoint cannot be bound. The linger is skipped when the block raised or
    ``skip_linger()`` is true (the user asked to stop).
    """
    live = session.live
    assert live is not None, "the session needs live=True"
    server = LiveResultServer(
        context,
        endpoint,
        live.update_for,
        max_reply_bytes=int(settings.live.max_reply_mb * 2**20),
        max_queued_bytes=int(settings.live.max_queued_mb * 2**20),
        security=security,
    )
    with server:
        logger.info("live results at %s; view with: plstream dashboard --connect %s", server.endpoint, server.endpoint)
        if on_live_ready is not None:
            on_live_ready(server.endpoint)
        yield
        if linger_s > 0 and not skip_linger():
            logger.debug("serving the final live results %.1f s more", linger_s)
            try:
                time.sleep(linger_s)
            except KeyboardInterrupt:
                logger.debug("stopped serving live results early (Ctrl-C)")


def analyze_stream(
    subscriber: FrameSubscriber,
    settings: Settings,
    output_path: str | Path,
    *,
    stop_event: threading.Event,
    on_tick: Callable[[SessionStatus], None] | None = None,
    source_alive: Callable[[], bool] | None = None,
    live_endpoint: str | None = None,
    on_live_ready: Callable[[str], None] | None = None,
    linger_s: float | None = None,
    context: zmq.Context | None = None,
    on_event: Callable[[str], None] | None = None,
    recording: RecordingPlan | None = None,
    security: SocketSecurity | None = None,
    on_end: Callable[[], None] | None = None,
    resume: ResumePoint | None = None,
) -> AnalysisOutcome:
    """Analyze what ``subscriber`` receives into ``output_path``; always closes the file.

    Parameters
    ----------
    subscriber : FrameSubscriber
        Where the frames come from.
    settings : Settings
        Effective settings of the run.
    output_path : path
        Result file to write.
    stop_event : threading.Event
        Set it to stop (the file is closed with status ``interrupted``).
    on_tick : callable, optional
        Called with the session's counters after each message (progress line).
    source_alive : callable, optional
        False once the source process died (the analysis then ends with an error).
    live_endpoint : str, optional
        Serve live results here (port 0: a free port); ``None`` or ``""``: do not serve.
    on_live_ready : callable, optional
        Called with the resolved live endpoint (``tcp://127.0.0.1:PORT``) once it
        is bound, before the first frame (e.g. to start a dashboard).
    linger_s : float, optional
        Seconds live results are still served after the file is closed
        (default ``live.linger_s``).
    context : zmq.Context, optional
        Context for the live result socket (default: a private one).
    on_event : callable, optional
        Told when the analysis prepares for the stream and when it is ready (a sentence).
    recording : RecordingPlan, optional
        Record the frames that arrive (see :mod:`plstream.recording`); its
        counters go into the result's summary (``recording``).
    security : SocketSecurity, optional
        Encrypts the live endpoint where other machines can reach it (without
        it, only loopback and ipc endpoints can serve live results).
    on_end : callable, optional
        Called as soon as no more frames will be analyzed (before the file is
        finished), e.g. to let the source process wind down meanwhile.
    resume : ResumePoint, optional
        Continue the analysis saved in ``output_path`` (the stream must start
        at ``resume.next_seq``; see :mod:`plstream.analysis.resume`).

    Raises
    ------
    LiveEndpointError
        ``live_endpoint`` cannot be bound (nothing has been analyzed yet).
    """
    session = AnalysisSession(settings, output_path, live=bool(live_endpoint), on_event=on_event, resume=resume)
    with contextlib.ExitStack() as serving:
        if live_endpoint:
            if context is None:
                context = security.context if security is not None else serving.enter_context(zmq.Context())
            serving.enter_context(
                _serving_live_results(
                    context,
                    session,
                    live_endpoint,
                    settings,
                    on_live_ready=on_live_ready,
                    linger_s=settings.live.linger_s if linger_s is None else linger_s,
                    security=security,
                    skip_linger=stop_event.is_set,
                )
            )
        error = ""
        receiver: Any = subscriber
        if recording is not None:
            receiver = RecordingSubscriber(subscriber, recording, output_path)
        try:
            status = run_analysis(
                receiver,
                session,
                stop_event=stop_event,
                silence_warning_s=settings.stream.silence_warning_s,
                peer_timeout_s=settings.stream.peer_timeout_s,
                source_alive=source_alive,
                on_tick=on_tick,
                heartbeat_interval_s=settings.stream.heartbeat_interval_s,
            )
            if status == "error":
                error = session.status.end_message or f"the source ended the stream with {session.status.end_reason!r}"
        except (StreamSilentError, ResultWriteError, AnalysisError) as exc:
            status, error = "error", str(exc)
        except KeyboardInterrupt:
            status = "interrupted"
        finally:
            if on_end is not None:
                on_end()
        recorded = receiver.close() if isinstance(receiver, RecordingSubscriber) else None
        extra: dict[str, Any] = {"stream_counters": dict(subscriber.counters)}
        if recorded:
            extra["recording"] = recorded
        try:
            summary = session.close(status, error, extra=extra)
        except ResultWriteError as exc:  # the last rows or the final status could not be written
            status, error = "error", str(exc)
            summary = session.summary()
        outcome = AnalysisOutcome(status, summary, session.output_path, session.status, error)
    return outcome


@contextlib.contextmanager
def _local_data_endpoint() -> Iterator[tuple[str, str]]:
    """Where a source process on this machine sends its frames, and the private folder it lives in ("" for none).

    An IPC socket in a private temporary folder where the platform has them
    (only this user can connect, and 512x512 frames replay ~10 % faster than
    over TCP loopback: 549 vs 491 frames/s end to end, ``benchmarks/throughput.py
    --preset 512``); elsewhere TCP on 127.0.0.1, any free port. The folder is
    removed on every way out of the block (see :func:`plstream.lifecycle.private_folder`).
    """
    if not zmq.has("ipc"):
        yield "tcp://127.0.0.1:0", ""
        return
    with private_folder() as folder:
        yield f"ipc://{folder}/frames", str(folder)


def _wind_down(process: Any, subscriber: FrameSubscriber, frames_received: Callable[[], int]) -> None:
    """Wait for the (already told to stop) source process to end; terminate it if it does not.

    Meanwhile whatever it still sends is taken (so it is never stuck in a send)
    and its end message is confirmed (so it does not wait for that either).
    """
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    while process.is_alive() and time.monotonic() < deadline:
        message = subscriber.receive(0.05)
        if isinstance(message, EndMessage):
            subscriber.send_done(message.run_uid, frames_received())
    if process.is_alive():
        logger.warning("the source process did not stop in %.0f s; terminating it", _JOIN_TIMEOUT_S)
        process.terminate()
        process.join(_KILL_WAIT_S)
    if process.is_alive():
        process.kill()
        process.join(_KILL_WAIT_S)
    process.join(0)


def analyze_with_source_process(
    spec: SourceSpec,
    settings: Settings,
    output_path: str | Path,
    *,
    on_tick: Callable[[SessionStatus], None] | None = None,
    live_endpoint: str | None = None,
    on_live_ready: Callable[[str], None] | None = None,
    linger_s: float | None = None,
    on_event: Callable[[str], None] | None = None,
    recording: RecordingPlan | None = None,
    resume: ResumePoint | None = None,
    security: Security | None = None,
) -> AnalysisOutcome:
    """Run the source in a spawned process and analyze its stream here (``run``, ``replay``).

    ``live_endpoint``, ``on_live_ready``, ``linger_s`` and ``resume`` are as in
    :func:`analyze_stream` (with ``resume``, ``spec.first_seq`` must be ``resume.next_seq``).

    The source process stops with this one however this one ends (see
    :func:`plstream.lifecycle.die_with_parent`); Ctrl-C, SIGTERM and SIGHUP
    stop both cleanly (status ``interrupted``). ``security`` encrypts the live
    endpoint where other machines can reach it (the frames go over a private
    ipc or loopback socket, never encrypted).
    """
    stop_event = threading.Event()
    mp = multiprocessing.get_context("spawn")
    source_stop = mp.Event()
    results = mp.Queue()
    outcome: AnalysisOutcome | None = None
    with contextlib.ExitStack() as stack:
        context = stack.enter_context(zmq.Context())
        secured = stack.enter_context(_secured(context, security))
        stack.enter_context(stop_on_signals(stop_event, also=(source_stop,)))
        data_endpoint, folder = stack.enter_context(_local_data_endpoint())
        subscriber = stack.enter_context(
            FrameSubscriber(
                context,
                data_endpoint,
                bind=True,
                pattern="data",
                max_frame_bytes=int(settings.stream.max_frame_mb * 2**20),
            )
        )
        process = mp.Process(
            target=_source_process_main,
            args=(spec, subscriber.endpoint, settings, source_stop, results, os.getpid(), folder),
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
                live_endpoint=live_endpoint,
                on_live_ready=on_live_ready,
                linger_s=linger_s,
                on_event=on_event,
                recording=recording,
                context=context,
                on_end=source_stop.set,
                resume=resume,
                security=secured,
            )
        finally:
            source_stop.set()
            received = outcome.session_status.frames_received if outcome is not None else 0
            _wind_down(process, subscriber, lambda: received)
    assert outcome is not None  # analyze_stream returned (had it raised, this line would not be reached)
    try:
        kind, payload = results.get(timeout=1.0 if process.exitcode == 0 else 0.1)
    except queue.Empty:
        kind, payload = "unknown", {}
    results.close()
    if kind == "error" and (not outcome.error or outcome.error == _SOURCE_DIED):
        outcome.error = str(payload)  # the source's own words beat "it exited"
        if outcome.status == "complete":
            outcome.status = "error"
    elif kind == "ok":
        outcome.source_counters = dict(payload)
    return outcome
