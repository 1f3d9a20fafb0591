"""Serving live results: one ROUTER socket that answers each viewer's request with one update.

The analyzer makes a :class:`LiveResultServer` with a *provider*, a callable
that turns a :class:`LiveRequest` into a :class:`LiveUpdate` from its current
results. A background thread answers requests as they come; nothing is queued
or pushed, so a slow or vanished viewer costs the analysis nothing. A bad
request, a provider that fails or a reply that cannot be delivered is logged,
counted and skipped; none stops the server. The protocol is described in
``docs/wire_format.md``, section "Live result protocol".
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from plstream.stream.endpoints import is_loopback
from plstream.stream.live.messages import LiveRequest, LiveUpdate
from plstream.stream.live.wire import MAX_REQUEST_ID_BYTES, LiveProtocolError, decode_request, encode_update

__all__ = ["LiveEndpointError", "LiveResultServer"]

logger = logging.getLogger(__name__)

_POLL_MS = 100
_JOIN_TIMEOUT_S = 5.0
_HEARTBEAT_IVL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 3000
_COUNTERS = ("requests", "replies", "malformed", "provider_errors", "dropped")


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
        (e.g. read frozen snapshots) and fast. Its arrays must not change until
        the reply is sent; the server copies them into ZeroMQ's buffers right
        after the call, so they need not outlive it. Its exceptions are logged and
        counted, and that request gets no reply (the viewer times out and asks again).
    max_request_bytes : int
        Largest request message part accepted, bytes; ZeroMQ disconnects a peer
        that sends more.
    send_hwm : int
        Replies queued per viewer before further replies to it are dropped.

    Attributes
    ----------
    counters : dict
        ``requests`` (messages received), ``replies`` (updates sent), ``malformed``
        (requests that did not decode), ``provider_errors`` (the provider raised or
        returned something that cannot be encoded), ``dropped`` (replies ZeroMQ
        refused to queue). Written by the server thread only.

    Notes
    -----
    ``ROUTER_MANDATORY`` is off, so ZeroMQ silently discards a reply to a viewer
    that has gone or whose queue is full; ``dropped`` counts only the replies
    ZeroMQ reports as not sent. Results are served unencrypted: bind to a
    loopback address unless the network is trusted.

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
        send_hwm: int = 4,
    ) -> None:
        if not callable(provider):
            raise TypeError(f"provider must be a callable LiveRequest -> LiveUpdate, got {type(provider).__name__}")
        self._context = context
        self._requested_endpoint = endpoint
        self._endpoint = endpoint
        self._provider = provider
        self._max_request_bytes = int(max_request_bytes)
        self._send_hwm = int(send_hwm)
        self._socket: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
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

    def start(self) -> None:
        """Bind the socket and start answering requests.

        Raises
        ------
        LiveEndpointError
            If the endpoint cannot be bound; the message says why and what to do.
        RuntimeError
            If the server was already started or is closed.
        """
        if self._closed or self._thread is not None:
            raise RuntimeError("this LiveResultServer was already started or is closed; make a new one")
        socket = self._context.socket(zmq.ROUTER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, self._send_hwm)
            socket.setsockopt(zmq.RCVHWM, 64)
            socket.setsockopt(zmq.MAXMSGSIZE, self._max_request_bytes)
            socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
            socket.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
            try:
                socket.bind(self._requested_endpoint)
            except zmq.ZMQError as exc:
                hint = f"cannot be bound ({exc.strerror}); pick another with --live"
                if exc.errno is not None:  # pyzmq types errno as optional
                    hint = _BIND_HINTS.get(exc.errno, hint)
                raise LiveEndpointError(exc.errno, f"live result endpoint {self._requested_endpoint} {hint}") from exc
            resolved = socket.getsockopt_string(zmq.LAST_ENDPOINT) or self._requested_endpoint
        except BaseException:
            socket.close(linger=0)
            raise
        self._endpoint = resolved.replace("://0.0.0.0:", "://127.0.0.1:")
        if not is_loopback(resolved):
            logger.warning(
                "live results are served unencrypted on %s, reachable from other machines; "
                "bind to tcp://127.0.0.1:PORT unless this network is trusted",
                resolved,
            )
        self._socket = socket
        self._thread = threading.Thread(target=self._serve, name=f"live-results {self._endpoint}", daemon=True)
        self._thread.start()
        logger.info("serving live results on %s", self._endpoint)

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
        if self._socket is not None and not self._socket.closed:
            self._socket.close(linger=0)
        self._socket = None

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
        socket = self._socket
        assert socket is not None
        try:
            while not self._stop.is_set():
                if not socket.poll(_POLL_MS, zmq.POLLIN):
                    continue
                try:
                    parts = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    continue
                self._answer(socket, parts)
        except zmq.ContextTerminated:
            logger.warning("the zmq context was terminated before LiveResultServer.close(); live results stopped")
            socket.close(linger=0)
        except zmq.ZMQError as exc:
            logger.error("live result server on %s stopped: %s", self._endpoint, exc)

    def _answer(self, socket: zmq.Socket, parts: list[Any]) -> None:
        self.counters["requests"] += 1
        # parts: [viewer identity (added by ROUTER), request id envelope, request header]
        if len(parts) < 3 or not 1 <= len(parts[1]) <= MAX_REQUEST_ID_BYTES:
            self._malformed(
                f"expected [request id of 1-{MAX_REQUEST_ID_BYTES} bytes, header], got {len(parts) - 1} parts"
            )
            return
        identity, envelope = parts[0], parts[1]
        try:
            request = decode_request(parts[2:])
        except LiveProtocolError as exc:
            self._malformed(str(exc))
            return
        try:
            reply = encode_update(self._provider(request))
        except Exception:  # a failing provider must not stop the server; the viewer asks again
            self.counters["provider_errors"] += 1
            logger.exception(
                "live result provider failed for %s (provider error %d); no reply sent",
                request,
                self.counters["provider_errors"],
            )
            return
        try:
            # copied into ZeroMQ's buffers here, so the provider may reuse its arrays once it returned
            socket.send_multipart([identity, envelope, *reply], zmq.NOBLOCK, copy=True)
        except zmq.ContextTerminated:
            raise
        except zmq.ZMQError as exc:  # zmq.Again: this viewer's queue is full
            self.counters["dropped"] += 1
            logger.debug("dropped a live reply (%d dropped): %s", self.counters["dropped"], exc)
            return
        self.counters["replies"] += 1

    def _malformed(self, problem: str) -> None:
        self.counters["malformed"] += 1
        logger.warning("skipped a malformed live request (%d so far): %s", self.counters["malformed"], problem)
