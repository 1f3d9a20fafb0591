"""Live results: a running analyzer serves its history; dashboards pull what they lack.

The protocol (``docs/wire_format.md``, "Live result protocol") is defined in
:mod:`.messages` and encoded by :mod:`.wire`; :class:`LiveResultServer`
answers, :class:`LiveResultClient` asks. On the analyzer's side the history
is a :class:`LiveState`, filled by a :class:`LiveFeed` at a bounded cadence.
"""

from plstream.stream.live.client import LiveResultClient
from plstream.stream.live.feed import LiveFeed
from plstream.stream.live.history import LiveState
from plstream.stream.live.messages import LIVE_STATES, LIVE_VERSION, LiveRequest, LiveUpdate, empty_update
from plstream.stream.live.server import LiveEndpointError, LiveResultServer
from plstream.stream.live.wire import LiveProtocolError, decode_request, decode_update, encode_request, encode_update

__all__ = [
    "LIVE_STATES",
    "LIVE_VERSION",
    "LiveEndpointError",
    "LiveFeed",
    "LiveProtocolError",
    "LiveRequest",
    "LiveResultClient",
    "LiveResultServer",
    "LiveState",
    "LiveUpdate",
    "decode_request",
    "decode_update",
    "empty_update",
    "encode_request",
    "encode_update",
]
