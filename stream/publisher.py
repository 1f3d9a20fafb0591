"""Sending a run: the lossless DEALER data socket, the lossy PUB monitor, and the producer loop.

:class:`FramePublisher` owns the sockets; :func:`publish` drives one
:class:`~plstream.acquire_adapters.base.FrameSource` through it. The data
socket blocks when the consumer is slow, so a file replay is paced by the
analyzer and never drops; a live camera cannot be paced, so :func:`publish`
gives it a bounded queue and drops (and counts) the frames that find it full.

The consumer answers on the same connection: :func:`publish` sends ``start``
and waits for the consumer's ``ready`` before it takes the first frame from
the source (a camera starts acquiring only then), and reads the consumer's
heartbeats while it streams.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from plstream.stream import wire
from plstream.stream.endpoints import SocketPreparer, StreamError, attach
from plstream.stream.log_limit import LimitedLog
from plstream.stream.messages import (
    CONSUMER_KINDS,
    ConsumerHeartbeatMessage,
    DoneMessage,
    EndMessage,
    FrameMessage,
    HeartbeatMessage,
    ReadyMessage,
    StartMessage,
)

if TYPE_CHECKING:  # only for annotations (importing the adapters' package would load numpy-heavy modules)
    from plstream.acquire_adapters.base import Frame, FrameSource

__all__ = ["ConsumerLost", "ConsumerTimeout", "FramePublisher", "StreamStopped", "publish"]

logger = logging.getLogger(__name__)

_SEND_POLL_MS = 100  # a blocked send wakes up this often to check for a stop
_CONSUMER_MESSAGE_BYTES = 65536  # the largest answer a consumer may send (they are a few hundred bytes)
_STOPPED_END_TIMEOUT_S = 1.0  # how long a stopped run tries to deliver its end message
_ERROR_END_TIMEOUT_S = 10.0
_READER_JOIN_S = 2.0
_DROP_LOG_INTERVAL_S = 5.0

StopCheck = Callable[[], bool]


class ConsumerTimeout(StreamError):
    """No consumer took a message within ``consumer_timeout_s``."""


class ConsumerLost(StreamError):
    """The consumer stopped answering (no ``consumer_heartbeat``) for ``peer_timeout_s`` while frames were sent."""


class ConsumerNotReady(StreamError):
    """The consumer took the ``start`` but did not say ``ready`` within the time allowed."""


class StreamStopped(Exception):
    """A send was abandoned because the producer was asked to stop."""


class FramePublisher:
    """Sends one run at a time: to a DEALER data socket and, optionally, to a PUB monitor socket.

    The data socket also receives what the consumer answers (``ready``,
    ``consumer_heartbeat``): :meth:`poll_consumer` reads it without waiting,
    :meth:`wait_ready` waits for the consumer to be ready for the open run.

    Parameters
    ----------
    context : zmq.Context
        The context the sockets are made in (the caller owns and terminates it).
    endpoint : str
        Data endpoint, e.g. ``tcp://127.0.0.1:5555``; with ``bind`` a port of 0
        picks a free port (see :attr:`endpoint`).
    bind : bool
        Bind the data socket (the analyzer connects) or connect it (the analyzer binds).
    send_hwm : int
        Messages queued per consumer before a send blocks.
    linger_ms : int
        How long :meth:`close` keeps trying to deliver queued messages, ms.
    monitor_endpoint : str, optional
        Where to bind the PUB monitor socket for viewers (lossy: a slow viewer
        misses frames and never slows the producer).
    monitor_hwm : int
        Messages queued per viewer before that viewer's messages are dropped.
    consumer_timeout_s : float, optional
        Raise :class:`ConsumerTimeout` when no consumer takes a message for this
        long, s; ``None`` waits forever.
    should_stop : callable, optional
        Default stop check of every send (e.g. ``threading.Event().is_set``); a
        blocked send raises :class:`StreamStopped` within ~0.1 s once it is true.
    clock : callable
        Wall clock for message timestamps, s since the Unix epoch.
    security : SocketSecurity, optional
        Encrypts both sockets where the endpoint needs it (see :mod:`plstream.stream.security`);
        without it only loopback and ipc endpoints are allowed.

    Attributes
    ----------
    run_uid, last_seq : str or None, int
        The open run and the seq of its last frame sent (-1 if none).
    counters : dict
        ``messages_sent``, ``frames_sent``, ``heartbeats``, ``blocked_s``, ``consumer_messages``,
        ``consumer_malformed`` over the publisher's life.
    consumer_frames_received : int
        Frames of the open run the consumer last said it had received (-1: not heard yet).

    Notes
    -----
    Frames of 64 kB or more are sent without a copy: the frame's array must
    not be modified after :meth:`send_frame` (sources yield a new array per frame).
    Not thread-safe: use a publisher from one thread at a time.
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        *,
        bind: bool = True,
        send_hwm: int = 8,
        linger_ms: int = 1000,
        monitor_endpoint: str | None = None,
        monitor_hwm: int = 2,
        consumer_timeout_s: float | None = None,
        should_stop: StopCheck | None = None,
        clock: Callable[[], float] = time.time,
        security: SocketPreparer | None = None,
    ) -> None:
        self._bind = bind
        self._consumer_timeout_s = consumer_timeout_s
        self.should_stop = should_stop
        self._clock = clock
        self._monitor: zmq.Socket | None = None
        self._monitor_endpoint: str | None = None
        self._socket = context.socket(zmq.DEALER)
        try:
            self._socket.setsockopt(zmq.SNDHWM, send_hwm)
            self._socket.setsockopt(zmq.MAXMSGSIZE, _CONSUMER_MESSAGE_BYTES)  # answers are a few bytes
            self._socket.setsockopt(zmq.LINGER, linger_ms)
            self._socket.setsockopt(zmq.SNDTIMEO, _SEND_POLL_MS)
            self._endpoint = attach(self._socket, endpoint, bind=bind, role="data", security=security)
            if monitor_endpoint:
                self._monitor = context.socket(zmq.PUB)
                self._monitor.setsockopt(zmq.SNDHWM, monitor_hwm)
                self._monitor.setsockopt(zmq.LINGER, 0)
                self._monitor.setsockopt(zmq.MAXMSGSIZE, 65536)  # it only receives subscriptions
                self._monitor_endpoint = attach(
                    self._monitor, monitor_endpoint, bind=True, role="monitor", security=security
                )
        except BaseException:
            self.close()
            raise
        self.run_uid: str | None = None
        self.last_seq = -1
        self.counters: dict[str, int | float] = {"messages_sent": 0, "frames_sent": 0, "heartbeats": 0}
        self.counters["blocked_s"] = 0.0
        self.counters["consumer_messages"] = self.counters["consumer_malformed"] = 0
        self._ready_runs: set[str] = set()
        self._done_runs: set[str] = set()
        self._heard_at: float | None = None
        self.consumer_frames_received = -1
        self._log = LimitedLog(logger)
        self._closed = False

    # ------------------------------------------------------------------ endpoints
    @property
    def endpoint(self) -> str:
        """The data endpoint actually bound or connected (with the real port when 0 was asked)."""
        return self._endpoint

    @property
    def last_endpoint(self) -> str:
        """Same as :attr:`endpoint` (ZeroMQ's name for it)."""
        return self._endpoint

    @property
    def monitor_endpoint(self) -> str | None:
        """The monitor endpoint actually bound, or ``None`` without a monitor."""
        return self._monitor_endpoint

    # ------------------------------------------------------------------ messages
    def send_start(
        self,
        source_description: Mapping[str, Any],
        run_uid: str | None = None,
        *,
        should_stop: StopCheck | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Open a run described by ``source_description`` (``FrameSource.describe()``); returns its run_uid."""
        description = dict(source_description)
        if "shape" not in description or "dtype" not in description:
            raise ValueError("the source description needs 'shape' and 'dtype'; FrameSource.describe() must give them")
        try:
            dtype = np.dtype(description["dtype"]).name
        except TypeError:
            dtype = str(description["dtype"])
        shape = description["shape"]
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else shape  # checked by encode()
        message = StartMessage(run_uid or uuid.uuid4().hex, description, shape, dtype, self._clock())
        parts = wire.encode(message)
        self.run_uid, self.last_seq = message.run_uid, -1
        self.consumer_frames_received = -1
        self._send(parts, should_stop, timeout_s)
        return message.run_uid

    def send_frame(self, frame: Frame, *, should_stop: StopCheck | None = None, timeout_s: float | None = None) -> None:
        """Send one frame of the current run (blocks while the consumer is busy)."""
        run_uid = self._require_run()
        metadata = {**frame.metadata, "t_pub": self._clock()}  # send time, for the analyzer's lag
        message = FrameMessage(run_uid, frame.seq, frame.timestamp, frame.data, metadata)
        self._send(wire.encode(message), should_stop, timeout_s)
        self.last_seq = max(self.last_seq, int(frame.seq))
        self.counters["frames_sent"] += 1

    def send_end(
        self,
        reason: str,
        counters: Mapping[str, int | float],
        message: str = "",
        *,
        n_frames: int | None = None,
        should_stop: StopCheck | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Close the current run.

        ``n_frames`` is the number of frames the run accounts for (sent or
        dropped); by default the last sent seq + 1.
        """
        run_uid = self._require_run()
        n = self.last_seq + 1 if n_frames is None else n_frames
        end = EndMessage(run_uid, n, reason, message, dict(counters), self._clock())
        self._send(wire.encode(end), should_stop, timeout_s)

    def send_heartbeat(
        self,
        counters: Mapping[str, int | float] | None = None,
        *,
        should_stop: StopCheck | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Say "alive" with the last sent seq and the counters (this publisher's, updated by ``counters``)."""
        run_uid = self._require_run()
        merged = {**self.counters, **(counters or {})}
        beat = HeartbeatMessage(run_uid, self.last_seq, self._clock(), merged)
        self._send(wire.encode(beat), should_stop, timeout_s)
        self.counters["heartbeats"] += 1

    # ------------------------------------------------------------------ the consumer's answers
    def poll_consumer(self) -> int:
        """Read every message the consumer sent so far, without waiting; returns how many were read.

        ``ready`` marks its run ready (:meth:`is_ready`); a ``consumer_heartbeat``
        updates :attr:`consumer_frames_received`. Anything else is logged and
        counted (``consumer_malformed``), never raised.
        """
        count = 0
        while True:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return count
            count += 1
            try:
                message = wire.decode(parts, max_frame_bytes=0)
                if message.kind not in CONSUMER_KINDS:
                    raise wire.ProtocolError(f"a consumer may send only {', '.join(CONSUMER_KINDS)}", kind=message.kind)
            except wire.ProtocolError as exc:
                self.counters["consumer_malformed"] += 1
                self._log.warning(
                    "malformed answer", "skipped a malformed answer from the consumer at %s: %s", self._endpoint, exc
                )
                continue
            self.counters["consumer_messages"] += 1
            self._heard_at = time.monotonic()
            if isinstance(message, ReadyMessage):
                self._ready_runs.add(message.run_uid)
            elif isinstance(message, DoneMessage):
                self._done_runs.add(message.run_uid)
                if message.run_uid == self.run_uid:
                    self.consumer_frames_received = message.frames_received
            elif isinstance(message, ConsumerHeartbeatMessage) and message.run_uid == self.run_uid:
                self.consumer_frames_received = message.frames_received

    def is_ready(self, run_uid: str | None = None) -> bool:
        """Whether the consumer said ``ready`` for ``run_uid`` (default: the open run)."""
        return (run_uid or self.run_uid) in self._ready_runs

    def wait_done(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the consumer to confirm it has the end of the open run; True if it did.

        Closing the socket before that can cost the consumer the messages it
        has not read yet; a consumer that never answers only costs the wait.
        """
        run_uid = self._require_run()
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll_consumer()
            if run_uid in self._done_runs:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._socket.poll(min(_SEND_POLL_MS, max(1, int(remaining * 1000))), zmq.POLLIN)

    def consumer_silent_s(self) -> float | None:
        """Seconds since the consumer last said anything (None: never heard from)."""
        return None if self._heard_at is None else time.monotonic() - self._heard_at

    def wait_ready(
        self,
        *,
        timeout_s: float | None,
        should_stop: StopCheck | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """Wait until the consumer is ready for the open run.

        Parameters
        ----------
        timeout_s : float or None
            Give up after this long, s (None: wait as long as it takes).
        should_stop : callable, optional
            Checked every 0.1 s; raises :class:`StreamStopped` once true.
        on_wait : callable, optional
            Called with the seconds waited so far, about once a second (a progress line).

        Raises
        ------
        ConsumerNotReady, StreamStopped
        """
        run_uid = self._require_run()
        stop = should_stop if should_stop is not None else self.should_stop
        started = last_report = time.monotonic()
        while True:
            self.poll_consumer()
            if self.is_ready(run_uid):
                return
            now = time.monotonic()
            if stop is not None and stop():
                raise StreamStopped("stopped while waiting for the consumer to be ready")
            if timeout_s is not None and now - started >= timeout_s:
                raise ConsumerNotReady(
                    f"the consumer at {self._endpoint} took the start of the run but was not ready within "
                    f"{timeout_s:g} s (stream.ready_timeout_s); is the analyzer still preparing, or stuck?"
                )
            if on_wait is not None and now - last_report >= 1.0:
                last_report = now
                on_wait(now - started)
            self._socket.poll(_SEND_POLL_MS, zmq.POLLIN)

    def _require_run(self) -> str:
        if self.run_uid is None:
            raise RuntimeError("no run is open; call send_start() first")
        return self.run_uid

    def _send(self, parts: list[Any], should_stop: StopCheck | None, timeout_s: float | None) -> None:
        if self._closed:
            raise RuntimeError("the publisher is closed")
        stop = should_stop if should_stop is not None else self.should_stop
        limit = timeout_s if timeout_s is not None else self._consumer_timeout_s
        copies = [memoryview(part).nbytes < zmq.COPY_THRESHOLD for part in parts]  # zero-copy from 64 kB
        started = time.monotonic()
        blocked = False
        try:
            for i, part in enumerate(parts):
                flags = zmq.SNDMORE if i < len(parts) - 1 else 0
                while True:
                    try:
                        self._socket.send(part, flags, copy=copies[i])
                        break
                    except zmq.Again:
                        blocked = True
                        if i > 0:
                            continue  # the rest of a started message is never held back by the HWM
                        if stop is not None and stop():
                            raise StreamStopped(f"stopped while waiting for a consumer at {self._endpoint}") from None
                        if limit is not None and time.monotonic() - started >= limit:
                            raise ConsumerTimeout(self._timeout_text(limit)) from None
        finally:
            if blocked:
                self.counters["blocked_s"] += time.monotonic() - started
        self.counters["messages_sent"] += 1
        if self._monitor is not None:  # PUB never blocks: a viewer at its HWM just misses the message
            self._monitor.send_multipart(parts, zmq.NOBLOCK, copy=False)  # pyzmq copies parts < 64 kB

    def _timeout_text(self, limit: float) -> str:
        where, flag = self._endpoint, "--connect" if self._bind else "--bind"
        bound = "" if self._bind else " bound"
        return (
            f"no consumer took a message for {limit:g} s; start the analyzer{bound} at {where} "
            f"(plstream analyze {flag} {where})"
        )

    # ------------------------------------------------------------------ lifetime
    def close(self, linger_ms: int | None = None) -> None:
        """Close the sockets; queued data messages get ``linger_ms`` (default: the constructor's) to leave.

        Safe to call twice. ``linger_ms=0`` drops what is queued: for a consumer
        that is gone or a run that was stopped.
        """
        self._closed = True
        if getattr(self, "_socket", None) is not None:
            self._socket.close(linger=linger_ms)
        if self._monitor is not None:
            self._monitor.close()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SourceReader(threading.Thread):
    """Iterates a source into a queue: blocking puts (lossless) or drop-and-count (live)."""

    def __init__(self, source: FrameSource, queue_frames: int | None, max_frames: int | None = None) -> None:
        super().__init__(name="plstream-source-reader", daemon=True)
        self._source = source
        self._max_frames = max_frames
        self.lossless = queue_frames is None
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=1 if queue_frames is None else queue_frames)
        self.produced = self.dropped = 0
        self.last_dropped_seq = -1  # the highest seq dropped because the queue was full
        self.error: Exception | None = None
        self.finished = threading.Event()
        self._halt = threading.Event()
        self._last_drop_log = -float("inf")

    def run(self) -> None:
        try:
            for frame in self._source:
                self.produced += 1
                if self.lossless:
                    while not self._halt.is_set():
                        try:
                            self.frames.put(frame, timeout=0.05)
                            break
                        except queue.Full:
                            continue
                else:
                    try:
                        self.frames.put_nowait(frame)
                    except queue.Full:
                        self._drop(frame)
                if self._halt.is_set():
                    return
                if self._max_frames is not None and self.produced >= self._max_frames:
                    return  # as many frames as asked for: the run is complete
        except Exception as exc:  # noqa: BLE001 - handed to the publishing thread, which ends the run and re-raises
            self.error = exc
        finally:
            self.finished.set()

    def _drop(self, frame: Frame) -> None:
        self.dropped += 1
        self.last_dropped_seq = max(self.last_dropped_seq, int(frame.seq))
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            logger.warning(
                "the live queue (%d frames) is full: dropped frame %d (%d dropped so far); the consumer is slower "
                "than the source",
                self.frames.maxsize,
                frame.seq,
                self.dropped,
            )

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self._source.stop()  # a live camera may be waiting for its next frame
            self.join(_READER_JOIN_S)
            if self.is_alive():
                logger.warning("the frame source did not return within %.0f s of the stop", _READER_JOIN_S)


def _never() -> bool:
    return False


def publish(
    source: FrameSource,
    publisher: FramePublisher,
    *,
    stop_event: Any = None,
    heartbeat_interval_s: float = 1.0,
    queue_frames: int | None = None,
    progress: Callable[[dict[str, int | float]], None] | None = None,
    ready_timeout_s: float | None = 600.0,
    on_waiting: Callable[[float], None] | None = None,
    done_timeout_s: float = 30.0,
    max_frames: int | None = None,
    peer_timeout_s: float | None = None,
    first_seq: int = 0,
) -> dict[str, int | float]:
    """Stream every frame of ``source`` as one run: ``start``, (the consumer's ``ready``), frames, heartbeats, ``end``.

    No frame is taken from the source before the consumer said it is ready
    for the run, so a camera starts acquiring only once its frames can be
    analyzed.

    Parameters
    ----------
    source : FrameSource
        Iterated in a helper thread; the caller closes it.
    publisher : FramePublisher
    stop_event : threading.Event or multiprocessing.Event, optional
        Set it to stop; the run then ends with reason ``"stopped"``. Without
        it, the publisher's ``should_stop`` is used.
    heartbeat_interval_s : float
        A heartbeat is sent when no frame was sent for this long, s.
    queue_frames : int, optional
        ``None``: lossless — frames are taken from the source only as fast as
        the consumer takes them, at most two ahead (file replay). ``N``: live —
        frames go into a queue of ``N``; a frame that finds it full is dropped
        and counted (``dropped_queue_full``); downstream sees the seq gap.
    progress : callable, optional
        Called with a copy of the counters after every frame and heartbeat.
    ready_timeout_s : float or None
        How long to wait for the consumer's ``ready`` after the ``start`` was
        taken, s (its first run compiles the analysis kernels: minutes on a
        fresh install); None waits as long as it takes.
    on_waiting : callable, optional
        Called about once a second with the seconds waited for ``ready``.
    done_timeout_s : float
        After the ``end``, how long to wait for the consumer's ``done`` before
        returning (the caller then closes the socket), s.
    max_frames : int, optional
        End the run (``"complete"``) after this many frames were taken from
        the source (e.g. a camera that would run until stopped).
    peer_timeout_s : float, optional
        Once the consumer said ``ready``, stop with :class:`ConsumerLost` when
        it has not answered (its heartbeats come about once a second) for this
        long, s: an analyzer that was stopped or crashed never unblocks a
        send. None: wait for it as long as it takes.
    first_seq : int
        The source starts at this ``seq`` (a resumed replay): the frames before
        it are not counted as lost.

    Returns
    -------
    dict
        ``frames_produced``, ``frames_sent``, ``dropped_queue_full``,
        ``discarded_on_stop`` (taken from the source but not sent when a stop
        came), ``lost_in_source`` (seqs the source skipped: frames lost in a
        camera or its driver), ``heartbeats`` and ``blocked_s`` (time sends
        waited for the consumer, s). The end message carries the same counters.

    Raises
    ------
    InputError, Exception
        Whatever the source raised mid-stream, after an ``end`` with reason
        ``"error"`` and its message was sent.
    ConsumerTimeout
        When the publisher's ``consumer_timeout_s`` ran out (no end is sent).
    ConsumerNotReady
        When the consumer did not say ``ready`` within ``ready_timeout_s``.
    ConsumerLost
        When the consumer fell silent for ``peer_timeout_s`` (no end is sent:
        nobody would take it); the message says what was sent and dropped.
    """
    if heartbeat_interval_s <= 0:
        raise ValueError(f"heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
    if queue_frames is not None and queue_frames < 1:
        raise ValueError(f"queue_frames must be >= 1 (or None for lossless), got {queue_frames}")
    asked_to_stop: StopCheck = stop_event.is_set if stop_event is not None else (publisher.should_stop or _never)
    lost: list[float] = []  # how long the consumer had been silent, once it counts as gone

    def should_stop() -> bool:
        if asked_to_stop():
            return True
        if peer_timeout_s is None or not publisher.is_ready():
            return False
        publisher.poll_consumer()  # a blocked send must still hear the consumer's heartbeats
        silent = publisher.consumer_silent_s()
        if silent is not None and silent > peer_timeout_s:
            lost.append(silent)
            return True
        return False

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (or None), got {max_frames}")
    reader = _SourceReader(source, queue_frames, max_frames)
    sent = beats = 0
    blocked_before = float(publisher.counters["blocked_s"])

    def snapshot() -> dict[str, int | float]:
        blocked_s = round(float(publisher.counters["blocked_s"]) - blocked_before, 6)
        return {
            "frames_produced": reader.produced,
            "frames_sent": sent,
            "dropped_queue_full": reader.dropped,
            "lost_in_source": max(
                0, max(publisher.last_seq, reader.last_dropped_seq) + 1 - first_seq - sent - reader.dropped
            ),
            "heartbeats": beats,
            "blocked_s": blocked_s,
        }

    reason = "complete"
    failure: Exception | None = None
    description = source.describe()
    try:
        publisher.send_start(description, should_stop=should_stop)
        publisher.wait_ready(timeout_s=ready_timeout_s, should_stop=should_stop, on_wait=on_waiting)
        reader.start()
        last_sent = time.monotonic()
        while True:
            if should_stop():
                reason = "stopped"
                break
            publisher.poll_consumer()
            wait = min(0.1, max(0.0, last_sent + heartbeat_interval_s - time.monotonic()))
            try:
                frame = reader.frames.get(timeout=wait)
            except queue.Empty:
                if reader.finished.is_set() and reader.frames.empty():
                    failure = reader.error
                    break
                if time.monotonic() - last_sent >= heartbeat_interval_s:
                    publisher.send_heartbeat(snapshot(), should_stop=should_stop)
                    beats += 1
                    last_sent = time.monotonic()
                    if progress is not None:
                        progress(snapshot())
                continue
            publisher.send_frame(frame, should_stop=should_stop)
            sent += 1
            last_sent = time.monotonic()
            if progress is not None:
                progress(snapshot())
    except StreamStopped:
        reason = "stopped"
    except wire.ProtocolError as exc:  # the source produced a frame that cannot be sent
        failure = exc
    finally:
        reader.halt()
    counters = snapshot()
    taken = int(counters["frames_sent"]) + int(counters["dropped_queue_full"])
    counters["discarded_on_stop"] = counters["frames_produced"] - taken
    # The run accounts for every seq up to the highest one sent or dropped (the source's own count):
    # seqs below it that the source never produced were lost in the camera or its driver.
    n_frames = max(publisher.last_seq, reader.last_dropped_seq) + 1
    counters["lost_in_source"] = max(0, n_frames - first_seq - taken)
    if lost and not asked_to_stop():
        dropped = "" if reader.lossless else f"; {counters['dropped_queue_full']} frames were dropped meanwhile"
        raise ConsumerLost(
            f"the consumer at {publisher.endpoint} has not answered for {lost[-1]:.0f} s "
            f"(stream.peer_timeout_s = {peer_timeout_s:g} s): it was stopped or crashed. Stopped sending after "
            f"{counters['frames_sent']} frames (last seq {publisher.last_seq}){dropped}; "
            f"{counters['discarded_on_stop']} taken from the source were not sent"
        )
    if failure is not None:
        reason, message = "error", f"the frame source failed: {failure}"
        logger.error("%s; ending the run", message)
        if _send_end_quietly(publisher, reason, counters, message, n_frames, should_stop, _ERROR_END_TIMEOUT_S):
            publisher.wait_done(_ERROR_END_TIMEOUT_S)
        raise failure
    if reason == "stopped":
        if _send_end_quietly(publisher, reason, counters, "", n_frames, None, _STOPPED_END_TIMEOUT_S):
            publisher.wait_done(_STOPPED_END_TIMEOUT_S)
        return counters
    try:
        publisher.send_end(reason, counters, n_frames=n_frames, should_stop=should_stop)
        delivered = True
    except StreamStopped:  # every frame went out; a stop came while the end waited for the consumer
        delivered = _send_end_quietly(publisher, reason, counters, "", n_frames, None, _STOPPED_END_TIMEOUT_S)
    if delivered and not publisher.wait_done(done_timeout_s):
        logger.warning("the consumer did not confirm the end of the run within %.0f s", done_timeout_s)
    return counters


def _send_end_quietly(
    publisher: FramePublisher,
    reason: str,
    counters: dict[str, int | float],
    message: str,
    n_frames: int,
    should_stop: StopCheck | None,
    timeout_s: float,
) -> bool:
    """Try to deliver the end of a run that did not complete; False (logged, not raised) when no consumer took it."""
    try:
        publisher.send_end(
            reason, counters, message, n_frames=n_frames, should_stop=should_stop or _never, timeout_s=timeout_s
        )
    except (StreamStopped, ConsumerTimeout):
        logger.warning("the end message (%s) could not be delivered: no consumer took it", reason)
        return False
    return True
