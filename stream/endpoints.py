"""ZeroMQ endpoints: which ones only this machine can reach."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


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
