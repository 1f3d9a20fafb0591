"""plstream.stream: the frame stream between a source and its consumers.

The wire format (``docs/wire_format.md``) is defined in :mod:`.messages` and
encoded by :mod:`.wire`; :class:`FramePublisher` and :func:`publish` send a
run, :class:`FrameSubscriber` receives it and accounts for lost frames.

The live result protocol (same document) lets viewers pull analysis results
from a running analyzer: its schema is :mod:`.live_messages`, its encoding
:mod:`.live_wire`; :class:`LiveResultServer` answers, :class:`LiveResultClient` asks.
"""

from plstream.stream.endpoints import is_loopback
from plstream.stream.live_client import LiveResultClient
from plstream.stream.live_messages import LIVE_STATES, LIVE_VERSION, LiveRequest, LiveUpdate, empty_update
from plstream.stream.live_server import LiveEndpointError, LiveResultServer
from plstream.stream.live_wire import (
    LiveProtocolError,
    decode_request,
    decode_update,
    encode_request,
    encode_update,
)
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
    "is_loopback",
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
    "LIVE_VERSION",
    "LIVE_STATES",
    "LiveRequest",
    "LiveUpdate",
    "empty_update",
    "LiveProtocolError",
    "encode_request",
    "decode_request",
    "encode_update",
    "decode_update",
    "LiveResultServer",
    "LiveEndpointError",
    "LiveResultClient",
]
