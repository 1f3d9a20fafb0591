"""Receiving a run: decode, skip and count malformed messages, and answer the source.

:class:`FrameSubscriber` is a ROUTER socket on the data stream (the analyzer:
lossless, paces the producer, and answers it: :meth:`~FrameSubscriber.send_ready`,
:meth:`~FrameSubscriber.send_heartbeat`) or a SUB socket on a publisher's
monitor (a viewer: lossy, silent). Either
way every frame carries its ``seq``; which frames never arrived is the
consumer's :class:`~plstream.stream.sequence.SequenceTracker`'s to say (the
analysis session has one), not the socket's.
"""

from __future__ import annotations

import logging
import time

import zmq

from plstream.stream import wire
from plstream.stream.endpoints import SocketPreparer, attach
from plstream.stream.log_limit import LimitedLog
from plstream.stream.messages import (
    SOURCE_KINDS,
    ConsumerHeartbeatMessage,
    DoneMessage,
    FrameMessage,
    HeartbeatMessage,
    Message,
    ReadyMessage,
    StartMessage,
)

__all__ = ["FrameSubscriber"]

logger = logging.getLogger(__name__)

_HEADER_ALLOWANCE_BYTES = 65536
_PATTERNS = {"data": zmq.ROUTER, "monitor": zmq.SUB}


class FrameSubscriber:
    """Receives and validates stream messages, counting malformed messages and missing frames.

    Parameters
    ----------
    context : zmq.Context
        The context the socket is made in (the caller owns and terminates it).
    endpoint : str
        Endpoint to connect to, or with ``bind`` to bind (a port of 0 picks a
        free port; see :attr:`endpoint`).
    bind : bool
        Bind instead of connect.
    pattern : {"data", "monitor"}
        ``"data"`` for the lossless data stream (ROUTER: it can answer the
        source), ``"monitor"`` for a publisher's PUB monitor (SUB).
    receive_hwm : int
        Messages queued in this process before ZeroMQ stops reading from the peer.
    max_frame_bytes : int
        Largest frame payload accepted, bytes; larger messages are refused
        (ZeroMQ disconnects a peer that sends more than this plus 64 kB).
    security : SocketSecurity, optional
        Encrypts the socket where the endpoint needs it (see :mod:`plstream.stream.security`);
        without it only loopback and ipc endpoints are allowed.

    Attributes
    ----------
    counters : dict
        ``received`` (valid messages), ``frames``, ``malformed``, ``heartbeats``,
        ``answers_sent``, ``answers_undelivered`` (its queue was full).

    Notes
    -----
    A received frame's ``data`` is a read-only view on the ZeroMQ message
    buffer; it stays valid as long as the array (or the message) is
    referenced. Copy what you keep for long into your own buffer, so no ZeroMQ
    buffers are held. Not thread-safe: use a subscriber from one thread.
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        *,
        bind: bool = False,
        pattern: str = "data",
        receive_hwm: int = 8,
        max_frame_bytes: int = 2**31,
        security: SocketPreparer | None = None,
    ) -> None:
        if pattern not in _PATTERNS:
            raise ValueError(f"pattern must be 'data' (lossless analyzer) or 'monitor' (viewer), got {pattern!r}")
        self._max_frame_bytes = int(max_frame_bytes)
        self._routed = pattern == "data"
        self._peers: dict[str, bytes] = {}  # run_uid -> the ROUTER identity of its source
        self._socket = context.socket(_PATTERNS[pattern])
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.RCVHWM, receive_hwm)
            self._socket.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes + _HEADER_ALLOWANCE_BYTES)
            if pattern == "monitor":
                self._socket.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                # Not ROUTER_MANDATORY: with it, an answer sent to a source that is closing made libzmq 4.3
                # discard that source's frames still unread (measured), e.g. the end of a run.
                self._socket.setsockopt(zmq.SNDTIMEO, 0)
            self._endpoint = attach(self._socket, endpoint, bind=bind, role=f"{pattern} receive", security=security)
        except BaseException:
            self._socket.close()
            raise
        self._log = LimitedLog(logger)  # a flood of bad messages: a few lines per 5 s, the rest counted
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "frames", "malformed", "heartbeats", "answers_sent", "answers_undelivered"), 0
        )

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound or connected (with the real port when 0 was asked)."""
        return self._endpoint

    @property
    def last_endpoint(self) -> str:
        """Same as :attr:`endpoint`."""
        return self._endpoint

    # ------------------------------------------------------------------ receiving
    def receive(self, timeout_s: float) -> Message | None:
        """Return the next valid message, or ``None`` when none came within ``timeout_s`` seconds.

        Malformed messages are logged (a few lines per 5 s at most), counted
        (``malformed``) and skipped; this never raises for what a peer sends.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining_ms = max(0, round((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(remaining_ms, zmq.POLLIN):
                return None
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            identity = parts.pop(0).bytes if self._routed and parts else b""
            try:
                message = wire.decode(parts, max_frame_bytes=self._max_frame_bytes)
                if message.kind not in SOURCE_KINDS:
                    raise wire.ProtocolError("a source may not send this kind", kind=message.kind)
            except wire.ProtocolError as exc:
                self.counters["malformed"] += 1
                self._log.warning("malformed message", "skipped a malformed message from %s: %s", self._endpoint, exc)
                if time.monotonic() >= deadline:  # a flood of bad messages cannot hold the caller past its timeout
                    return None
                continue
            finally:
                del parts  # a frame's array keeps its own buffer alive; drop the rest now
            self._account(message)
            if self._routed and (isinstance(message, StartMessage) or message.run_uid not in self._peers):
                self._peers[message.run_uid] = identity
            return message

    # ------------------------------------------------------------------ answering the source
    def send_ready(self, run_uid: str) -> bool:
        """Tell the source of ``run_uid`` that its frames can come; False if it could not be told."""
        return self._answer(run_uid, ReadyMessage(run_uid, time.time()))

    def send_heartbeat(self, run_uid: str, frames_received: int) -> bool:
        """Tell the source of ``run_uid`` "still here, with this many of your frames"; False if it is gone."""
        return self._answer(run_uid, ConsumerHeartbeatMessage(run_uid, int(frames_received), time.time()))

    def send_done(self, run_uid: str, frames_received: int) -> bool:
        """Tell the source of ``run_uid`` that its end arrived, so it may close; False if it could not be told."""
        return self._answer(run_uid, DoneMessage(run_uid, int(frames_received), time.time()))

    def _answer(self, run_uid: str, message: Message) -> bool:
        identity = self._peers.get(run_uid)
        if not self._routed or identity is None:
            return False
        try:
            self._socket.send_multipart([identity, *wire.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EAGAIN: its queue is full (an answer to a source already gone just vanishes)
            self.counters["answers_undelivered"] += 1
            logger.debug("could not answer the source of run %s: %s", run_uid, exc)
            return False
        self.counters["answers_sent"] += 1
        return True

    def _account(self, message: Message) -> None:
        self.counters["received"] += 1
        if isinstance(message, FrameMessage):
            self.counters["frames"] += 1
        elif isinstance(message, HeartbeatMessage):
            self.counters["heartbeats"] += 1

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the socket (pending messages are discarded). Safe to call twice."""
        self._log.flush()
        self._socket.close()

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
