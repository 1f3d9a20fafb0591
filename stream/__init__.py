"""plstream.stream: the frame stream between a source and its consumers.

The wire format (``docs/wire_format.md``) is defined in :mod:`.messages` and
encoded by :mod:`.wire`; :class:`FramePublisher` and :func:`publish` send a
run, :class:`FrameSubscriber` receives it and accounts for lost frames.
"""

from plstream.stream.messages import (
    ALLOWED_DTYPES,
    END_REASONS,
    WIRE_VERSION,
    EndMessage,
    FrameMessage,
    HeartbeatMessage,
    Message,
    StartMessage,
)
from plstream.stream.publisher import ConsumerTimeout, FramePublisher, StreamError, StreamStopped, publish
from plstream.stream.subscriber import FrameSubscriber
from plstream.stream.wire import ProtocolError, decode, encode

__all__ = [
    "WIRE_VERSION",
    "ALLOWED_DTYPES",
    "END_REASONS",
    "StartMessage",
    "FrameMessage",
    "EndMessage",
    "HeartbeatMessage",
    "Message",
    "ProtocolError",
    "encode",
    "decode",
    "FramePublisher",
    "publish",
    "FrameSubscriber",
    "StreamError",
    "StreamStopped",
    "ConsumerTimeout",
]
