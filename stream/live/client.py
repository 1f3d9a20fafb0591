"""Asking a running analyzer for its results: one request, one update, or ``None`` in time.

:class:`LiveResultClient` is the viewer's end of the live result protocol
(``docs/wire_format.md``, section "Live result protocol"). It is a "lazy
pirate" client: each :meth:`LiveResultClient.fetch` sends one request on a
DEALER socket and waits a bounded time for the reply. When none comes, the
socket is thrown away and a fresh one made for the next fetch, so a late
reply can never be taken for the answer to a later request and a restarted
analyzer is found again. Every request carries a request id as its first part,
which the server echoes; replies with another id are discarded.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

import zmq

from plstream.stream.endpoints import SocketPreparer, secure_socket
from plstream.stream.live.messages import LiveRequest, LiveUpdate
from plstream.stream.live.wire import MAX_UPDATE_HEADER_BYTES, LiveProtocolError, decode_update, encode_request

__all__ = ["LiveResultClient"]

logger = logging.getLogger(__name__)

_HEARTBEAT_IVL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 3000
_RECEIVE_HWM = 4
_COUNTERS = ("requests", "replies", "timeouts", "malformed", "stale")


class LiveResultClient:
    """Fetches :class:`LiveUpdate` replies from a :class:`LiveResultServer`.

    Parameters
    ----------
    context : zmq.Context
        The context the socket is made in (the caller owns and terminates it,
        after :meth:`close`).
    endpoint : str
        The server's endpoint, e.g. ``tcp://127.0.0.1:5557``.
    timeout_s : float
        Longest wait for a reply in :meth:`fetch`, s.
    max_update_bytes : int
        Largest total size of an update's arrays accepted, bytes (see
        :func:`decode_update`); ZeroMQ disconnects a server that sends a larger part.
    security : SocketSecurity, optional
        Encrypts the connection where the endpoint needs it (see :mod:`plstream.stream.security`);
        without it only loopback and ipc endpoints are allowed.

    Attributes
    ----------
    counters : dict
        ``requests`` (sent), ``replies`` (valid updates returned), ``timeouts``,
        ``malformed`` (replies that did not decode), ``stale`` (replies to an
        earlier request, discarded).

    Notes
    -----
    Not thread-safe: use a client from one thread. The arrays of a returned
    update are read-only views on the received buffers.

    Examples
    --------
    >>> with LiveResultClient(zmq.Context.instance(), "tcp://127.0.0.1:5557") as client:  # doctest: +SKIP
    ...     update = client.fetch(LiveRequest(since_frame=0))
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        *,
        timeout_s: float = 2.0,
        max_update_bytes: int = 2**31,
        security: SocketPreparer | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 s, got {timeout_s!r}")
        self._context = context
        self._endpoint = endpoint
        self._timeout_s = float(timeout_s)
        self._max_update_bytes = int(max_update_bytes)
        self._security = security
        self._last_id = 0
        self._connected = False
        self._closed = False
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._socket: zmq.Socket | None = self._new_socket()  # a bad endpoint fails here, not at the first fetch

    @property
    def endpoint(self) -> str:
        """The server endpoint this client connects to."""
        return self._endpoint

    @property
    def connected(self) -> bool:
        """Whether the last :meth:`fetch` got a valid reply."""
        return self._connected

    def _new_socket(self) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
            socket.setsockopt(zmq.SNDHWM, _RECEIVE_HWM)
            socket.setsockopt(zmq.MAXMSGSIZE, self._max_update_bytes + MAX_UPDATE_HEADER_BYTES)
            socket.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
            secure_socket(socket, self._endpoint, bind=False, role="live results", security=self._security)
            try:
                socket.connect(self._endpoint)
            except zmq.ZMQError as exc:
                raise ValueError(
                    f"cannot connect to live result endpoint {self._endpoint!r}: {exc.strerror}; "
                    "write it as tcp://HOST:PORT"
                ) from exc
        except BaseException:
            socket.close(linger=0)
            raise
        return socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def fetch(self, request: LiveRequest) -> LiveUpdate | None:
        """Send ``request`` and return the server's update, or ``None`` when none came in time.

        Parameters
        ----------
        request : LiveRequest

        Returns
        -------
        LiveUpdate or None
            ``None`` after ``timeout_s`` without a reply (the socket is then
            replaced, dropping anything still queued) or when the reply was
            malformed (logged and counted); :attr:`connected` tells which call
            succeeded last.

        Raises
        ------
        LiveProtocolError
            If ``request`` itself is invalid (a bug in the caller).
        RuntimeError
            If the client is closed.
        """
        if self._closed:
            raise RuntimeError("this LiveResultClient is closed; make a new one")
        parts = encode_request(request)
        self._last_id += 1
        envelope = self._last_id.to_bytes(8, "little")
        if self._socket is None:
            self._socket = self._new_socket()
        socket = self._socket
        self._connected = False
        deadline = time.monotonic() + self._timeout_s
        try:
            socket.send_multipart([envelope, *parts], zmq.NOBLOCK)
        except zmq.Again:  # the send queue is full: the server has not read for a while
            self._timed_out()
            return None
        self.counters["requests"] += 1
        while True:
            remaining_ms = round((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not socket.poll(remaining_ms, zmq.POLLIN):
                self._timed_out()
                return None
            try:
                reply = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            if reply[0].bytes != envelope:
                self.counters["stale"] += 1
                logger.debug("discarded a live reply to an earlier request from %s", self._endpoint)
                continue
            try:
                update = decode_update(reply[1:], max_bytes=self._max_update_bytes)
            except LiveProtocolError as exc:
                self.counters["malformed"] += 1
                logger.warning(
                    "skipped a malformed live reply from %s (%d so far): %s",
                    self._endpoint,
                    self.counters["malformed"],
                    exc,
                )
                return None
            self.counters["replies"] += 1
            self._connected = True
            return update

    def _timed_out(self) -> None:
        self.counters["timeouts"] += 1
        logger.debug("no live reply from %s within %.1f s; reconnecting", self._endpoint, self._timeout_s)
        self._drop_socket()  # lazy pirate: a late reply must not answer the next request

    def close(self) -> None:
        """Close the socket; safe to call more than once."""
        self._closed = True
        self._connected = False
        self._drop_socket()

    def __enter__(self) -> LiveResultClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
