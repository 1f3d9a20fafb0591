"""Checks and msgpack helpers shared by :mod:`.wire` and :mod:`.live.wire`.

The value checks take a decoded msgpack value and return it (normalized), or
raise :class:`Invalid` saying what is wrong; the caller adds the field name and
turns it into its own protocol error.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np


class Invalid(ValueError):
    """A value is wrong; the validators raise it, callers add the context."""


def type_name(value: Any) -> str:
    """The type of ``value`` as a message names it."""
    return "bool" if isinstance(value, bool) else type(value).__name__


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def mapping(value: Any) -> dict[str, Any]:
    """Check a map with string keys."""
    if not isinstance(value, dict):
        raise Invalid(f"expected a map, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise Invalid(f"map keys must be strings, found {type_name(key)}")
    return value


def byte_view(part: Any, index: int) -> memoryview:
    """``part`` (bytes, memoryview, zmq.Frame) as a 1-D byte view; :class:`Invalid` if it is not a buffer."""
    try:
        view = memoryview(part)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
    except (TypeError, ValueError) as exc:
        raise Invalid(f"part {index} is not a byte buffer ({type_name(part)}: {exc})") from None
    return view


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(
        f"a {type(obj).__name__} cannot be sent (only msgpack types: str, int, float, bool, None, bytes, lists, maps)"
    )


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def pack(header: dict[str, Any]) -> bytes:
    """msgpack ``header`` (numpy scalars as Python numbers); raises TypeError, ValueError or OverflowError."""
    return msgpack.packb(header, use_bin_type=True, default=_msgpack_default)


def unpack(head: memoryview) -> Any:
    """Unpack one header part: str keys only, no extension types, arrays as lists.

    msgpack bounds every length by the input size, so a claimed huge array cannot
    allocate. Raises what msgpack raises (ValueError, TypeError and subclasses).
    """
    return msgpack.unpackb(head, raw=False, strict_map_key=True, max_ext_len=0, ext_hook=_reject_ext, use_list=True)
