"""ZeroMQ endpoints: binding or connecting with errors that say what to do, and which only this machine reaches.

Every socket of the stream is attached here (or, for the live results, set
up by :func:`secure_socket`), so that none reaches another machine
unencrypted by accident: an endpoint other machines can reach needs a
:class:`~plstream.stream.security.SocketSecurity` (keys, or ``--insecure``).
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Protocol

import zmq

__all__ = [
    "SecurityError",
    "SocketPreparer",
    "StreamError",
    "attach",
    "is_loopback",
    "reachable_by_others",
    "secure_socket",
]


class StreamError(RuntimeError):
    """A socket cannot be set up or used (address in use, bad endpoint, no consumer); the message says what to do."""


class SecurityError(StreamError):
    """An endpoint cannot be secured (no keys, a secret others can read, no allowed keys); the message says how."""


class SocketPreparer(Protocol):
    """What :func:`attach` needs of a :class:`~plstream.stream.security.SocketSecurity`."""

    def prepare(self, socket: zmq.Socket, endpoint: str, *, bind: bool, role: str) -> bool: ...


def secure_socket(socket: zmq.Socket, endpoint: str, *, bind: bool, role: str, security: SocketPreparer | None) -> bool:
    """Set ``socket``'s encryption for ``endpoint`` before it binds or connects; returns whether CURVE is used.

    Without ``security`` only endpoints this machine alone reaches (loopback,
    ipc) are allowed: anything else raises :class:`SecurityError`.
    """
    if security is not None:
        return security.prepare(socket, endpoint, bind=bind, role=role)
    if reachable_by_others(endpoint):
        verb, where = ("bind", "on") if bind else ("connect", "to")
        raise SecurityError(
            f"refusing to {verb} the {role} socket {where} {endpoint} without encryption: other machines can reach "
            "it. Give the socket a SocketSecurity (plstream: set up keys with 'plstream keys init', or pass "
            "--insecure on a trusted network), or use a loopback endpoint (tcp://127.0.0.1:PORT)"
        )
    return False


_BAD_ENDPOINT = "write endpoints as tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555) or ipc:///path/to/socket"
_NOT_HERE = "that address is not on this machine; bind 127.0.0.1 (this machine only) or * (all interfaces)"
_ENDPOINT_HINTS = {
    errno.EADDRINUSE: "another program (perhaps another plstream) is using that port; stop it or choose another "
    "port (a port of 0 picks a free one)",
    errno.EINVAL: _BAD_ENDPOINT,
    errno.EPROTONOSUPPORT: _BAD_ENDPOINT,
    errno.EADDRNOTAVAIL: _NOT_HERE,
    errno.ENODEV: _NOT_HERE,
}


def attach(socket: zmq.Socket, endpoint: str, *, bind: bool, role: str, security: SocketPreparer | None = None) -> str:
    """Secure (:func:`secure_socket`), then bind or connect ``socket``; return the actual endpoint (the port
    chosen for ``:0``)."""
    secure_socket(socket, endpoint, bind=bind, role=role, security=security)
    try:
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as exc:
        hint = "check the endpoint"
        if exc.errno is not None:  # pyzmq types errno as optional
            hint = _ENDPOINT_HINTS.get(exc.errno, hint)
        verb = "bind" if bind else "connect"
        raise StreamError(f"cannot {verb} the {role} socket to {endpoint}: {exc.strerror}; {hint}") from exc
    return socket.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` can only be reached from this machine (loopback TCP, ipc or inproc).

    Examples
    --------
    >>> is_loopback("tcp://127.0.0.1:5557"), is_loopback("ipc:///tmp/frames"), is_loopback("tcp://*:5557")
    (True, True, False)
    """
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a wildcard, an interface or a host name: may be reachable from outside
        return False


def reachable_by_others(endpoint: str) -> bool:
    """Whether other machines may reach ``endpoint``: every transport but loopback TCP, ipc and inproc.

    A string that is no endpoint at all (no ``://``) is left for ZeroMQ to refuse with its own error.

    Examples
    --------
    >>> reachable_by_others("tcp://*:5557"), reachable_by_others("tcp://127.0.0.1:5557"), reachable_by_others("x")
    (True, False, False)
    """
    return "://" in endpoint and not is_loopback(endpoint)
