"""Receiving a run: decode, and skip and count malformed messages.

:class:`FrameSubscriber` is a PULL socket (the analyzer: lossless, paces the
producer) or a SUB socket on a publisher's monitor (a viewer: lossy). Either
way every frame carries its ``seq``; which frames never arrived is the
consumer's :class:`~plstream.stream.sequence.SequenceTracker`'s to say (the
analysis session has one), not the socket's.
"""

from __future__ import annotations

import logging
import time

import zmq

from plstream.stream import wire
from plstream.stream.messages import FrameMessage, HeartbeatMessage, Message
from plstream.stream.publisher import _attach

__all__ = ["FrameSubscriber"]

logger = logging.getLogger(__name__)

_HEADER_ALLOWANCE_BYTES = 65536
_PATTERNS = {"pull": zmq.PULL, "sub": zmq.SUB}


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
    pattern : {"pull", "sub"}
        ``"pull"`` for the lossless data stream, ``"sub"`` for a publisher's monitor.
    receive_hwm : int
        Messages queued in this process before ZeroMQ stops reading from the peer.
    max_frame_bytes : int
        Largest frame payload accepted, bytes; larger messages are refused
        (ZeroMQ disconnects a peer that sends more than this plus 64 kB).

    Attributes
    ----------
    counters : dict
        ``received`` (valid messages), ``frames``, ``malformed``, ``heartbeats``.

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
        pattern: str = "pull",
        receive_hwm: int = 8,
        max_frame_bytes: int = 2**31,
    ) -> None:
        if pattern not in _PATTERNS:
            raise ValueError(f"pattern must be 'pull' (lossless analyzer) or 'sub' (monitor viewer), got {pattern!r}")
        self._max_frame_bytes = int(max_frame_bytes)
        self._socket = context.socket(_PATTERNS[pattern])
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.RCVHWM, receive_hwm)
            self._socket.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes + _HEADER_ALLOWANCE_BYTES)
            if pattern == "sub":
                self._socket.setsockopt(zmq.SUBSCRIBE, b"")
            self._endpoint = _attach(self._socket, endpoint, bind=bind, role=f"{pattern.upper()} receive")
        except BaseException:
            self._socket.close()
            raise
        self.counters: dict[str, int] = dict.fromkeys(("received", "frames", "malformed", "heartbeats"), 0)

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

        Malformed messages are logged, counted (``malformed``) and skipped;
        this never raises for what a peer sends.
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
            try:
                message = wire.decode(parts, max_frame_bytes=self._max_frame_bytes)
            except wire.ProtocolError as exc:
                self.counters["malformed"] += 1
                logger.warning("skipped a malformed message from %s: %s", self._endpoint, exc)
                if time.monotonic() >= deadline:  # a flood of bad messages cannot hold the caller past its timeout
                    return None
                continue
            finally:
                del parts  # a frame's array keeps its own buffer alive; drop the rest now
            self._account(message)
            return message

    def _account(self, message: Message) -> None:
        self.counters["received"] += 1
        if isinstance(message, FrameMessage):
            self.counters["frames"] += 1
        elif isinstance(message, HeartbeatMessage):
            self.counters["heartbeats"] += 1

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the socket (pending messages are discarded). Safe to call twice."""
        self._socket.close()

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
