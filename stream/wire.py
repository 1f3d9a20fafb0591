"""Pure encoding and decoding of stream messages (no sockets).

A message is a list of parts: part 0 is a msgpack map header
``{"v": WIRE_VERSION, "kind": ..., <fields>}``; a ``frame`` message has a
second part, the raw little-endian C-order pixel buffer. ``docs/wire_format.md``
is the full contract.

:func:`decode` trusts nothing: every part count, type, size and field is
checked, and the only exception it raises is :class:`ProtocolError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from plstream.stream._checks import Invalid, byte_view, mapping, pack, type_name, unpack
from plstream.stream.messages import (
    ALLOWED_DTYPES,
    END_REASONS,
    MAX_SEQ,
    MESSAGE_TYPES,
    WIRE_VERSION,
    FrameMessage,
    Message,
    header_fields,
)

__all__ = ["MAX_HEADER_BYTES", "ProtocolError", "decode", "encode"]

MAX_HEADER_BYTES = 1 << 20
"""Largest header part accepted (1 MiB); real headers are a few hundred bytes."""

_MAX_DIM_PX = 1 << 32
_MAX_UID_CHARS = 256


class ProtocolError(ValueError):
    """A message that does not follow the wire format.

    Attributes
    ----------
    problem : str
        What is wrong, in words.
    kind : str or None
        The message kind, when the header was readable.
    seq : int or None
        The frame's sequence number, when the header was readable.
    """

    def __init__(self, problem: str, *, kind: str | None = None, seq: int | None = None) -> None:
        self.problem = problem
        self.kind = kind
        self.seq = seq
        where = f"{kind} message" if kind else "message"
        if seq is not None:
            where = f"{where} seq {seq}"
        super().__init__(f"{where}: {problem}")


# ---------------------------------------------------------------- field validators
def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {type_name(value)}")
    return value


def _run_uid(value: Any) -> str:
    value = _string(value)
    if not 0 < len(value) <= _MAX_UID_CHARS:
        raise Invalid(f"must have 1 to {_MAX_UID_CHARS} characters, has {len(value)}")
    return value


def _integer(minimum: int, maximum: int = MAX_SEQ) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise Invalid(f"expected an integer, got {type_name(value)}")
        if value < minimum:
            raise Invalid(f"must be >= {minimum}, is {value}")
        if value > maximum:
            raise Invalid(f"must be <= {maximum}, is {value}")
        return int(value)

    return check


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Invalid(f"expected a number (s), got {type_name(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise Invalid(f"must be finite, is {value}")
    return value


def _shape(value: Any) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise Invalid(f"expected [rows, cols], got {value!r:.80}")
    for n in value:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= _MAX_DIM_PX:
            raise Invalid(f"expected two positive integers [rows, cols], got {value!r:.80}")
    return (int(value[0]), int(value[1]))


def _dtype(value: Any) -> str:
    if not isinstance(value, str) or value not in ALLOWED_DTYPES:
        raise Invalid(f"{value!r:.40} is not an allowed pixel type ({', '.join(ALLOWED_DTYPES)})")
    return value


def _counters(value: Any) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for key, count in mapping(value).items():
        if isinstance(count, bool) or not isinstance(count, (int, float, np.integer, np.floating)):
            raise Invalid(f"counter {key!r:.40} must be a number, got {type_name(count)}")
        out[key] = int(count) if isinstance(count, (int, np.integer)) else float(count)
    return out


def _reason(value: Any) -> str:
    if value not in END_REASONS:
        raise Invalid(f"{value!r:.40} is not one of {', '.join(END_REASONS)}")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "run_uid": _run_uid,
    "source": mapping,
    "shape": _shape,
    "dtype": _dtype,
    "timestamp": _seconds,
    "seq": _integer(0),
    "metadata": mapping,
    "n_frames": _integer(0),
    "reason": _reason,
    "message": _string,
    "counters": _counters,
    "last_seq": _integer(-1),
    "frames_received": _integer(0),
}
"""One check per header field name; a name means the same thing in every kind."""


def _check_fields(kind: str, header: dict[str, Any], seq: int | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in header_fields(kind):
        if name not in header:
            raise ProtocolError(f"required field {name!r} is missing", kind=kind, seq=seq)
        try:
            values[name] = _VALIDATORS[name](header[name])
        except Invalid as exc:
            raise ProtocolError(f"field {name!r}: {exc}", kind=kind, seq=seq) from None
    return values


# ---------------------------------------------------------------- encode
def encode(message: Message) -> list[Any]:
    """Encode ``message`` into the parts of one ZeroMQ multipart message.

    Parameters
    ----------
    message : one of the classes of :mod:`plstream.stream.messages`

    Returns
    -------
    list
        ``[header_bytes]``, or ``[header_bytes, payload]`` for a frame, where
        ``payload`` is a 1-D byte memoryview on the frame's pixels (the frame's
        own array when it is already C-contiguous and little-endian, so the
        caller can send it without a copy).

    Raises
    ------
    ProtocolError
        If a field has the wrong type or value, or metadata holds something
        msgpack cannot carry.
    """
    kind = getattr(type(message), "kind", None)
    if not isinstance(kind, str) or MESSAGE_TYPES.get(kind) is not type(message):
        raise ProtocolError(f"cannot encode a {type(message).__name__}; expected one of the stream message classes")
    header: dict[str, Any] = {"v": WIRE_VERSION, "kind": kind}
    header.update((f.name, getattr(message, f.name)) for f in fields(message) if f.name != "data")
    payload = None
    seq = header.get("seq") if isinstance(header.get("seq"), int) else None
    if isinstance(message, FrameMessage):
        data = np.asarray(message.data)
        if data.ndim != 2 or data.dtype.name not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"frame data must be a 2-D array of {', '.join(ALLOWED_DTYPES)}; got {data.ndim}-D {data.dtype}",
                kind=kind,
                seq=seq,
            )
        wire_dtype = data.dtype.newbyteorder("<")
        if data.dtype != wire_dtype or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=wire_dtype)
        header["shape"] = list(data.shape)
        header["dtype"] = data.dtype.name
        # ndarray.data is memoryview(data); numpy's stubs declare ndarray a Buffer only for Python >= 3.12
        payload = data.data.cast("B")
    header.update(_check_fields(kind, header, seq))
    try:
        header_bytes = pack(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode the header: {exc}", kind=kind, seq=seq) from None
    return [header_bytes] if payload is None else [header_bytes, payload]


# ---------------------------------------------------------------- decode
def _byte_view(part: Any, index: int) -> memoryview:
    try:
        return byte_view(part, index)
    except Invalid as exc:
        raise ProtocolError(str(exc)) from None


def decode(parts: Sequence[Any], *, max_frame_bytes: int) -> Message:
    """Decode and validate one multipart message.

    Parameters
    ----------
    parts : sequence of bytes, memoryview or zmq.Frame
        The message parts as received.
    max_frame_bytes : int
        Largest frame payload accepted, bytes; checked against the shape and
        dtype the header claims before the payload is touched.

    Returns
    -------
    one of the classes of :mod:`plstream.stream.messages`
        A frame's ``data`` is ``np.frombuffer(payload).reshape(shape)``: a view
        on the received buffer, no copy. It keeps that buffer (e.g. the
        ``zmq.Frame``) alive as long as the array is referenced, and may be
        read-only. Copy it into your own buffer to keep it for long.

    Raises
    ------
    ProtocolError
        For anything that does not follow the wire format; the message says
        what is wrong, and the frame's seq when the header was readable.
    """
    try:
        n_parts = len(parts)
    except TypeError:
        raise ProtocolError(f"expected a sequence of message parts, got {type_name(parts)}") from None
    if n_parts not in (1, 2):
        raise ProtocolError(f"has {n_parts} parts; expected 1 (header) or 2 (frame header + pixels)")
    head = _byte_view(parts[0], 0)
    if head.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header is {head.nbytes} bytes, more than the {MAX_HEADER_BYTES} allowed")
    try:
        header = unpack(head)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header is a msgpack {type_name(header)}, not a map")
    version = header.get("v")
    if isinstance(version, bool) or version != WIRE_VERSION:
        raise ProtocolError(
            f"wire version {version!r:.40} but this plstream reads version {WIRE_VERSION} only; "
            "run the same plstream version on both ends"
        )
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown kind {kind!r:.40}; expected one of {', '.join(MESSAGE_TYPES)}")
    raw_seq = header.get("seq")
    seq = raw_seq if kind == "frame" and isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else None
    expected_parts = 2 if kind == "frame" else 1
    if n_parts != expected_parts:
        raise ProtocolError(f"has {n_parts} parts; a {kind} message has {expected_parts}", kind=kind, seq=seq)
    values = _check_fields(kind, header, seq)
    if kind != "frame":
        return MESSAGE_TYPES[kind](**values)
    shape = values.pop("shape")
    dtype = np.dtype(values.pop("dtype")).newbyteorder("<")
    expected_bytes = shape[0] * shape[1] * dtype.itemsize
    if expected_bytes > max_frame_bytes:
        raise ProtocolError(
            f"a {shape[0]}x{shape[1]} {dtype.name} frame is {expected_bytes} bytes, more than the "
            f"{max_frame_bytes} allowed (max_frame_bytes; raise stream.max_frame_mb for larger frames)",
            kind=kind,
            seq=seq,
        )
    payload = _byte_view(parts[1], 1)
    if payload.nbytes != expected_bytes:
        raise ProtocolError(
            f"pixel part is {payload.nbytes} bytes but shape {list(shape)} of {dtype.name} needs {expected_bytes}",
            kind=kind,
            seq=seq,
        )
    data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return FrameMessage(data=data, **values)
