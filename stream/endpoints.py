"""ZeroMQ endpoints: binding or connecting with errors that say what to do, and which only this machine reaches."""

from __future__ import annotations

import errno
import ipaddress

import zmq

__all__ = ["StreamError", "attach", "is_loopback"]


class StreamError(RuntimeError):
    """A socket cannot be set up or used (address in use, bad endpoint, no consumer); the message says what to do."""


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


def attach(socket: zmq.Socket, endpoint: str, *, bind: bool, role: str) -> str:
    """Bind or connect ``socket``; return the actual endpoint (the port chosen for ``:0``)."""
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
