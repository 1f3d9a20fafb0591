"""The wire schema: one frozen dataclass per message kind, and :data:`WIRE_VERSION`.

A run on the wire is ``start``, then ``frame`` and ``heartbeat`` messages, then
``end``, from the source to its consumer. The consumer answers on the same
connection: ``ready`` once it can take frames of the run (its kernels
compiled, its output checked), ``consumer_heartbeat`` now and then, so the
source knows it is still there, and ``done`` once it has the ``end``. The
field names and types here are the public contract documented in
``docs/wire_format.md``; ``tests/stream/test_wire.py`` fails when the two drift apart.
Encoding and validation live in :mod:`plstream.stream.wire`.

Any incompatible change (a field renamed, removed, retyped or made required,
a payload rule changed) bumps :data:`WIRE_VERSION`; decoders reject messages
of any other version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "ALLOWED_DTYPES",
    "CONSUMER_KINDS",
    "END_REASONS",
    "MAX_SEQ",
    "MESSAGE_TYPES",
    "SOURCE_KINDS",
    "WIRE_VERSION",
    "ConsumerHeartbeatMessage",
    "DoneMessage",
    "EndMessage",
    "FrameMessage",
    "HeartbeatMessage",
    "Message",
    "ReadyMessage",
    "StartMessage",
    "header_fields",
]

WIRE_VERSION = 2
"""Version of the wire format; every header carries it as ``v`` (history: ``docs/wire_format.md``)."""

MAX_SEQ = 2**63 - 1
"""Largest sequence number or frame count on the wire (it must fit a signed 64-bit integer)."""

ALLOWED_DTYPES: tuple[str, ...] = ("uint8", "uint16", "uint32", "int16", "int32", "float32", "float64")
"""Pixel types a ``frame`` payload may have (numpy names; little-endian on the wire)."""

END_REASONS: tuple[str, ...] = ("complete", "stopped", "error")
"""Why a run ended: every frame was sent, the producer was stopped, or the source failed."""

Counters = dict[str, int | float]


@dataclass(frozen=True)
class StartMessage:
    """Opens a run.

    Attributes
    ----------
    run_uid : str
        Identifier of the run (a new one per run; 32 hex digits by default).
    source : dict
        The :meth:`FrameSource.describe` dict (``source``, ``shape``, ``dtype``,
        ``n_frames``, optionally ``frame_rate_hz`` and ``camera``).
    shape : tuple of int
        Frame shape ``(rows, cols)`` in px.
    dtype : str
        Pixel type, one of :data:`ALLOWED_DTYPES`.
    timestamp : float
        Time the run started, s since the Unix epoch.
    """

    kind: ClassVar[str] = "start"

    run_uid: str
    source: dict[str, Any]
    shape: tuple[int, int]
    dtype: str
    timestamp: float


@dataclass(frozen=True)
class FrameMessage:
    """One frame of a run; the pixels travel as the message's second part.

    On the wire the header carries ``shape`` and ``dtype`` in place of
    ``data``; here both are read from ``data`` (:attr:`shape`, :attr:`dtype`).

    Attributes
    ----------
    run_uid : str
        The run this frame belongs to.
    seq : int
        Sequence number in the run, 0-based, one per frame the source produced;
        a jump means frames were lost or dropped.
    timestamp : float
        Acquisition time, s.
    data : numpy.ndarray
        The 2-D image (rows, cols). A decoded frame's array is a read-only view
        on the received message buffer (see :func:`plstream.stream.wire.decode`).
    metadata : dict
        Small extras from the source (e.g. exposure); may be empty. The
        publisher adds ``t_pub``: when it sent the frame, s since the Unix
        epoch (its clock), from which the analyzer reports its lag.
    """

    kind: ClassVar[str] = "frame"

    run_uid: str
    seq: int
    timestamp: float
    data: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Frame shape ``(rows, cols)`` in px."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> str:
        """Pixel type name, e.g. ``"uint16"``."""
        return self.data.dtype.name


@dataclass(frozen=True)
class EndMessage:
    """Closes a run.

    Attributes
    ----------
    run_uid : str
        The run that ended.
    n_frames : int
        Frames the run accounts for: sequence numbers ``0 .. n_frames - 1`` were
        produced and either sent or dropped (and counted). A receiver that saw
        fewer lost the rest.
    reason : str
        One of :data:`END_REASONS`.
    message : str
        What went wrong when ``reason == "error"``, else ``""``.
    counters : dict
        The producer's counters (``frames_sent``, ``dropped_queue_full``,
        ``heartbeats``, ``blocked_s``, ...), str -> int or float.
    timestamp : float
        Time the run ended, s since the Unix epoch.
    """

    kind: ClassVar[str] = "end"

    run_uid: str
    n_frames: int
    reason: str
    message: str
    counters: Counters
    timestamp: float


@dataclass(frozen=True)
class HeartbeatMessage:
    """Sent when the producer had no frame to send for a while: "alive, and here are my counters".

    Attributes
    ----------
    run_uid : str
        The current run.
    last_seq : int
        Sequence number of the last frame sent, or -1 if none yet.
    timestamp : float
        Send time, s since the Unix epoch.
    counters : dict
        The producer's counters, as in :class:`EndMessage`.
    """

    kind: ClassVar[str] = "heartbeat"

    run_uid: str
    last_seq: int
    timestamp: float
    counters: Counters


@dataclass(frozen=True)
class ReadyMessage:
    """Consumer to source: "I can take the frames of this run now" (answers its ``start``).

    A source waits for it before it starts acquiring, so no frame arrives
    while the consumer is still compiling kernels or opening its output.

    Attributes
    ----------
    run_uid : str
        The run the consumer is ready for.
    timestamp : float
        When it became ready, s since the Unix epoch (its clock).
    """

    kind: ClassVar[str] = "ready"

    run_uid: str
    timestamp: float


@dataclass(frozen=True)
class ConsumerHeartbeatMessage:
    """Consumer to source, about once per heartbeat interval: "still here, and this is how far I got".

    Attributes
    ----------
    run_uid : str
        The run being consumed.
    frames_received : int
        Frames of the run the consumer has received so far.
    timestamp : float
        Send time, s since the Unix epoch (its clock).
    """

    kind: ClassVar[str] = "consumer_heartbeat"

    run_uid: str
    frames_received: int
    timestamp: float


@dataclass(frozen=True)
class DoneMessage:
    """Consumer to source: "I have the end of this run" (answers its ``end``).

    The source keeps its connection open until then: a consumer that answers
    a source which already closed its socket can lose the messages it has not
    read yet (ZeroMQ drops a ROUTER's unread messages from a peer that is gone).

    Attributes
    ----------
    run_uid : str
        The run that ended.
    frames_received : int
        Frames of the run the consumer received.
    timestamp : float
        Send time, s since the Unix epoch (its clock).
    """

    kind: ClassVar[str] = "done"

    run_uid: str
    frames_received: int
    timestamp: float


Message = (
    StartMessage | FrameMessage | EndMessage | HeartbeatMessage | ReadyMessage | ConsumerHeartbeatMessage | DoneMessage
)

SOURCE_KINDS = ("start", "frame", "heartbeat", "end")
"""Message kinds a source sends."""
CONSUMER_KINDS = ("ready", "consumer_heartbeat", "done")
"""Message kinds a consumer sends back."""

MESSAGE_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        StartMessage,
        FrameMessage,
        EndMessage,
        HeartbeatMessage,
        ReadyMessage,
        ConsumerHeartbeatMessage,
        DoneMessage,
    )
}
"""Message class of each ``kind``."""

_PAYLOAD_HEADER_FIELDS = ("shape", "dtype")


def header_fields(kind: str) -> tuple[str, ...]:
    """Names of the header fields of ``kind`` besides ``v`` and ``kind``, in schema order.

    The same as the dataclass fields, except that a ``frame`` header carries
    ``shape`` and ``dtype`` where the dataclass has ``data``.

    Raises
    ------
    KeyError
        If ``kind`` is not one of :data:`MESSAGE_TYPES`.
    """
    names: list[str] = []
    for f in fields(MESSAGE_TYPES[kind]):
        names.extend(_PAYLOAD_HEADER_FIELDS if f.name == "data" else (f.name,))
    return tuple(names)
