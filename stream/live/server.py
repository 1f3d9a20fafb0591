"""Serving live results: one ROUTER socket that answers each viewer's request with one update.

The analyzer makes a :class:`LiveResultServer` with a *provider*, a callable
that turns a :class:`LiveRequest` into a :class:`LiveUpdate` from its current
results. A background thread answers requests as they come; nothing is pushed,
so a slow or vanished viewer costs the analysis nothing. A bad request, a
provider that fails or a reply that cannot be delivered is logged, counted and
skipped; none stops the server. The protocol is described in
``docs/wire_format.md``, section "Live result protocol".

Memory is bounded whatever the viewers do. A reply carries at most
``max_reply_bytes`` of rows (the viewer asks again for the rest); ZeroMQ
queues at most ``send_hwm`` replies per viewer; and the replies handed to
ZeroMQ whose viewer has neither asked again (which, in this protocol, it
does only once it has its reply) nor left total at most ``max_queued_bytes``:
beyond that, requests are refused (counted; the viewer times out and asks
again), so viewers that ask for the whole history and never read cannot grow
the analyzer. When a viewer leaves, ZeroMQ frees what was queued for it (LINGER
0) and its share of the budget is released (a socket monitor reports the
disconnection). The server keeps no copy of a reply.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from plstream.stream.endpoints import SocketPreparer, secure_socket
from plstream.stream.live.messages import LiveRequest, LiveUpdate
from plstream.stream.live.wire import MAX_REQUEST_ID_BYTES, LiveProtocolError, decode_request, encode_update

__all__ = ["LiveEndpointError", "LiveResultServer"]

logger = logging.getLogger(__name__)

_POLL_MS = 100
_JOIN_TIMEOUT_S = 5.0
_HEARTBEAT_IVL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 3000
_FIRST_PAGE_ROWS = 256
_RECEIVE_BATCH = 64  # requests read per wake-up before the monitor is looked at again
_REFUSAL_LOG_INTERVAL_S = 10.0
_COUNTERS = (
    "requests",
    "replies",
    "malformed",
    "provider_errors",
    "dropped",
    "refused",
    "truncated",
    "released_on_leave",
    "refused_handshakes",
)
_MONITORED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


class _InFlight:
    """Bytes of the replies handed to ZeroMQ whose viewer has neither asked again nor left.

    One entry per viewer (ROUTER identity): the connection it came on (its
    file descriptor, to release it when that connection closes) and the bytes
    of its last reply. Pure bookkeeping, no sockets.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = int(limit_bytes)
        self.total = 0
        self._peers: dict[bytes, tuple[int, int]] = {}

    @property
    def peers(self) -> int:
        return len(self._peers)

    def has_room(self, nbytes: int) -> bool:
        """Whether a reply of ``nbytes`` fits (one reply always fits when nothing else is in flight)."""
        return self.total == 0 or self.total + nbytes <= self.limit_bytes

    def charge(self, identity: bytes, fd: int, nbytes: int) -> None:
        self.release(identity)
        self._peers[identity] = (fd, int(nbytes))
        self.total += int(nbytes)

    def release(self, identity: bytes) -> tuple[int, int] | None:
        """Forget ``identity``'s reply (it asked again, so it has it); returns its ``(fd, bytes)``, if any."""
        entry = self._peers.pop(identity, None)
        if entry is not None:
            self.total -= entry[1]
        return entry

    def left(self, fd: int) -> int:
        """Release every viewer that came on connection ``fd`` (it closed); returns how many."""
        gone = [identity for identity, (peer_fd, _) in self._peers.items() if peer_fd == fd]
        for identity in gone:
            self.release(identity)
        return len(gone)


class LiveEndpointError(OSError):
    """The live result endpoint cannot be bound (in use, not on this machine, or not an endpoint)."""


_BIND_HINTS = {
    errno.EADDRINUSE: "is in use (another analyzer running?); pick another with --live",
    errno.EADDRNOTAVAIL: "is not an address of this machine; use tcp://127.0.0.1:PORT, or an address of this "
    "machine, with --live",
    errno.EINVAL: "is not a valid endpoint; write it as tcp://HOST:PORT with --live",
    errno.EPROTONOSUPPORT: "uses an unknown transport; write it as tcp://HOST:PORT with --live",
}


class LiveResultServer:
    """Answers live result requests on one ROUTER socket from a background thread.

    Parameters
    ----------
    context : zmq.Context
        The context the socket is made in (the caller owns and terminates it,
        after :meth:`close`).
    endpoint : str
        Where to bind, e.g. ``tcp://127.0.0.1:5557``; a port of 0 picks a free
        port (see :attr:`endpoint`).
    provider : callable
        ``provider(request) -> LiveUpdate``, called on the server's thread for
        each valid request; it must be thread-safe with respect to the analysis
        (e.g. read frozen snapshots) and fast. The arrays it returns are handed to
        ZeroMQ without a copy, so they must never be modified afterwards (return
        fresh copies or read-only arrays, as :class:`LiveState` does). Its
        exceptions are logged and counted, and that request gets no reply (the
        viewer times out and asks again). It is asked for no more rows than fit
        in ``max_reply_bytes`` (learned from its last reply), and a reply with
        more is cut to fit.
    max_request_bytes : int
        Largest request message part accepted, bytes; ZeroMQ disconnects a peer
        that sends more.
    send_hwm : int
        Replies ZeroMQ queues per viewer; a reply to a viewer whose queue is
        full is dropped (a viewer of this protocol has one request out at a time).
    max_reply_bytes : int
        Most bytes of rows one reply carries (at least one row; the spot table
        and the images are sent whole). The viewer asks again for the rest.
    max_queued_bytes : int
        Most bytes of replies in flight, over all viewers (see the module
        docstring); a request that would exceed it is refused. With the
        defaults, 16 viewers catch up at full speed at once.
    security : SocketSecurity, optional
        Encrypts the endpoint and admits only allowed viewers where the endpoint
        needs it (see :mod:`plstream.stream.security`); without it only loopback
        and ipc endpoints can be bound.

    Attributes
    ----------
    counters : dict
        ``requests`` (messages received), ``replies`` (updates sent), ``malformed``
        (requests that did not decode), ``provider_errors`` (the provider raised or
        returned something that cannot be encoded), ``dropped`` (replies ZeroMQ
        refused to queue: the viewer's queue was full or it had gone), ``refused``
        (requests not answered because ``max_queued_bytes`` were in flight),
        ``truncated`` (replies cut to ``max_reply_bytes``), ``released_on_leave``
        (viewers whose replies were released because their connection closed),
        ``refused_handshakes`` (connections whose CURVE handshake failed: an
        unknown key). Written by the server thread only.

    Examples
    --------
    >>> with LiveResultServer(zmq.Context.instance(), "tcp://127.0.0.1:0", provider) as server:  # doctest: +SKIP
    ...     print(server.endpoint)
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        provider: Callable[[LiveRequest], LiveUpdate],
        *,
        max_request_bytes: int = 65536,
        send_hwm: int = 1,
        max_reply_bytes: int = 4 << 20,
        max_queued_bytes: int = 64 << 20,
        security: SocketPreparer | None = None,
    ) -> None:
        if not callable(provider):
            raise TypeError(f"provider must be a callable LiveRequest -> LiveUpdate, got {type(provider).__name__}")
        if max_reply_bytes < 1 or max_queued_bytes < 1 or send_hwm < 1:
            raise ValueError(
                f"send_hwm, max_reply_bytes and max_queued_bytes must be >= 1, got {send_hwm}, {max_reply_bytes} "
                f"and {max_queued_bytes}"
            )
        self._context = context
        self._requested_endpoint = endpoint
        self._endpoint = endpoint
        self._provider = provider
        self._max_request_bytes = int(max_request_bytes)
        self._send_hwm = int(send_hwm)
        self._max_reply_bytes = int(max_reply_bytes)
        self._security = security
        self._in_flight = _InFlight(max_queued_bytes)
        # Rows that fit in a page, learned from the provider's last reply (to ask it for no more than that);
        # until the first reply with rows, a guess that keeps the first copy small whatever the number of spots.
        self._page_rows = _FIRST_PAGE_ROWS
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._last_refusal_log = -float("inf")
        self.encrypted = False
        """Whether the endpoint is served with CURVE (set by :meth:`start`)."""
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        """The endpoint bound (real port when 0 was asked; ``0.0.0.0`` shown as ``127.0.0.1``)."""
        return self._endpoint

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued_bytes(self) -> int:
        """Bytes of replies in flight: handed to ZeroMQ for viewers that have neither asked again nor left."""
        return self._in_flight.total

    @property
    def viewers_waiting(self) -> int:
        """Viewers with a reply in flight."""
        return self._in_flight.peers

    def start(self) -> None:
        """Bind the socket and start answering requests.

        Raises
        ------
        LiveEndpointError
            If the endpoint cannot be bound; the message says why and what to do.
        SecurityError
            If the endpoint needs keys that are missing or unsafe.
        RuntimeError
            If the server was already started or is closed.
        """
        if self._closed or self._thread is not None:
            raise RuntimeError("this LiveResultServer was already started or is closed; make a new one")
        socket = self._context.socket(zmq.ROUTER)
        monitor: zmq.Socket | None = None
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, self._send_hwm)
            socket.setsockopt(zmq.RCVHWM, 64)
            socket.setsockopt(zmq.MAXMSGSIZE, self._max_request_bytes)
            # A reply that cannot be queued (full queue, viewer gone) raises instead of vanishing: it is counted.
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            socket.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
            self.encrypted = secure_socket(
                socket, self._requested_endpoint, bind=True, role="live results", security=self._security
            )
            monitor = socket.get_monitor_socket(_MONITORED)
            try:
                socket.bind(self._requested_endpoint)
            except zmq.ZMQError as exc:
                hint = f"cannot be bound ({exc.strerror}); pick another with --live"
                if exc.errno is not None:  # pyzmq types errno as optional
                    hint = _BIND_HINTS.get(exc.errno, hint)
                raise LiveEndpointError(exc.errno, f"live result endpoint {self._requested_endpoint} {hint}") from exc
            resolved = socket.getsockopt_string(zmq.LAST_ENDPOINT) or self._requested_endpoint
        except BaseException:
            if monitor is not None:
                socket.disable_monitor()
                monitor.close(linger=0)
            socket.close(linger=0)
            raise
        self._endpoint = resolved.replace("://0.0.0.0:", "://127.0.0.1:")
        self._socket, self._monitor = socket, monitor
        self._thread = threading.Thread(target=self._serve, name=f"live-results {self._endpoint}", daemon=True)
        self._thread.start()
        logger.info("serving live results on %s%s", self._endpoint, " (CURVE)" if self.encrypted else "")

    def close(self) -> None:
        """Stop the thread and close the socket; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning(
                    "the live result provider is still running after %.0f s; its socket is left open", _JOIN_TIMEOUT_S
                )
                return
        self._close_sockets()

    def _close_sockets(self) -> None:
        if self._socket is not None and not self._socket.closed:
            if self._monitor is not None:
                try:
                    self._socket.disable_monitor()
                except zmq.ZMQError:  # the context is gone already
                    logger.debug("could not stop the live socket's monitor", exc_info=True)
            self._socket.close(linger=0)
        if self._monitor is not None and not self._monitor.closed:
            self._monitor.close(linger=0)
        self._socket = self._monitor = None

    def __enter__(self) -> LiveResultServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the serving thread
    def _serve(self) -> None:
        socket, monitor = self._socket, self._monitor
        assert socket is not None and monitor is not None
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(_POLL_MS))
                if monitor in ready:
                    self._read_monitor(monitor)
                if socket not in ready:
                    continue
                for _ in range(_RECEIVE_BATCH):
                    try:
                        parts = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._answer(socket, parts)
        except zmq.ContextTerminated:
            logger.warning("the zmq context was terminated before LiveResultServer.close(); live results stopped")
            self._close_sockets()
        except zmq.ZMQError as exc:
            logger.error("live result server on %s stopped: %s", self._endpoint, exc)

    def _read_monitor(self, monitor: zmq.Socket) -> None:
        """Release the replies of viewers whose connection closed; count refused handshakes."""
        while True:
            try:
                event = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            parsed = parse_monitor_message(event)
            kind = parsed["event"]
            if kind == zmq.EVENT_DISCONNECTED:  # its value is the connection's file descriptor
                released = self._in_flight.left(int(parsed["value"]))
                self.counters["released_on_leave"] += released
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                self.counters["refused_handshakes"] += 1

    def _answer(self, socket: zmq.Socket, parts: list[Any]) -> None:
        self.counters["requests"] += 1
        # parts: [viewer identity (added by ROUTER), request id envelope, request header]
        if len(parts) < 3 or not 1 <= len(parts[1]) <= MAX_REQUEST_ID_BYTES:
            self._malformed(
                f"expected [request id of 1-{MAX_REQUEST_ID_BYTES} bytes, header], got {len(parts) - 1} parts"
            )
            return
        identity, envelope = parts[0].bytes, parts[1]
        try:
            request = decode_request(parts[2:])
        except LiveProtocolError as exc:
            self._malformed(str(exc))
            return
        fd = _connection_of(envelope)
        previous = self._in_flight.release(identity)  # it asks again: it has its last reply
        if not self._in_flight.has_room(self._max_reply_bytes):
            self._refuse()
            return
        try:
            reply = encode_update(self._page(self._provider(self._within_page(request))))
        except Exception:  # a failing provider must not stop the server; the viewer asks again
            self.counters["provider_errors"] += 1
            logger.exception(
                "live result provider failed for %s (provider error %d); no reply sent",
                request,
                self.counters["provider_errors"],
            )
            return
        nbytes = sum(memoryview(part).nbytes for part in reply)
        if not self._in_flight.has_room(nbytes):
            self._refuse()
            return
        try:
            _send(socket, [identity, envelope, *reply])
        except zmq.ContextTerminated:
            raise
        except zmq.ZMQError as exc:  # EAGAIN: this viewer's queue is full; EHOSTUNREACH: it has gone
            self.counters["dropped"] += 1
            if previous is not None and exc.errno == errno.EAGAIN:  # it asked again without reading
                self._in_flight.charge(identity, previous[0], previous[1])
            logger.debug("dropped a live reply (%d dropped): %s", self.counters["dropped"], exc)
            return
        self._in_flight.charge(identity, fd, nbytes)
        self.counters["replies"] += 1

    def _within_page(self, request: LiveRequest) -> LiveRequest:
        """``request`` asking for no more rows than fit in a page (by the size of the last reply's rows)."""
        rows = self._page_rows
        return dataclasses.replace(request, max_frames=rows) if rows < request.max_frames else request

    def _page(self, update: LiveUpdate) -> LiveUpdate:
        """``update`` with no more rows than fit in ``max_reply_bytes`` (at least one)."""
        n = update.n_frames
        if n == 0:
            return update
        rows_bytes = sum(
            a.nbytes for a in (update.seq, update.timestamp, update.drift_xy, update.intensity, update.state)
        )
        row_bytes = max(1, -(-rows_bytes // n))
        spots = update.spots_x.nbytes + update.spots_y.nbytes + update.spots_first_frame.nbytes
        images = sum(a.nbytes for a in (update.image, update.mean_image) if a is not None)
        self._page_rows = max(1, (self._max_reply_bytes - spots) // row_bytes)  # for the next requests (no images)
        fit = max(1, (self._max_reply_bytes - spots - images) // row_bytes)
        if fit >= n:
            return update
        self.counters["truncated"] += 1
        return dataclasses.replace(  # copies, so that the provider's larger arrays are freed now, not once sent
            update,
            seq=update.seq[:fit].copy(),
            timestamp=update.timestamp[:fit].copy(),
            drift_xy=update.drift_xy[:fit].copy(),
            intensity=update.intensity[:fit].copy(),
            state=update.state[:fit].copy(),
        )

    def _refuse(self) -> None:
        self.counters["refused"] += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= _REFUSAL_LOG_INTERVAL_S:
            self._last_refusal_log = now
            logger.warning(
                "live results: %d viewers hold %.0f MB of replies they have not read (the limit is %.0f MB, "
                "live.max_queued_mb); refusing requests until they read or leave (%d refused so far)",
                self._in_flight.peers,
                self._in_flight.total / 2**20,
                self._in_flight.limit_bytes / 2**20,
                self.counters["refused"],
            )

    def _malformed(self, problem: str) -> None:
        self.counters["malformed"] += 1
        logger.warning("skipped a malformed live request (%d so far): %s", self.counters["malformed"], problem)


def _send(socket: zmq.Socket, parts: list[Any]) -> None:
    """Queue one reply without blocking; raise ``zmq.Again`` only when the viewer's queue is really full.

    The arrays go without a copy: they are fresh or read-only (see ``provider``),
    and ZeroMQ frees them once sent. ZeroMQ learns that a viewer's queue has
    drained from a command its I/O thread posts, which a send reads at most
    once a millisecond: with a queue of one reply, the answer to a viewer that
    has just read its last reply and asked again could find the queue "full".
    Reading the commands (``EVENTS``) and sending once more tells the two apart.
    """
    try:
        socket.send_multipart(parts, zmq.NOBLOCK, copy=False)
    except zmq.Again:
        socket.getsockopt(zmq.EVENTS)  # unthrottled: takes in every pending command
        socket.send_multipart(parts, zmq.NOBLOCK, copy=False)


def _connection_of(part: zmq.Frame) -> int:
    """The file descriptor of the connection a received message part came on (-1 if ZeroMQ does not say)."""
    try:
        return int(part.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return -1
