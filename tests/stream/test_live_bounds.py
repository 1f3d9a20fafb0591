"""The live result server's memory stays bounded whatever its viewers do (issue 9).

Viewers that ask for the whole history and never read must not make the
analyzer hold more than ``max_queued_bytes`` of replies, and what is held for
them is released when they leave. Asserted on what the server accounts for
(``queued_bytes``, its counters), which is deterministic; the process RSS is
measured by ``benchmarks/live_memory.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from plstream.stream.live import LiveRequest, LiveResultClient, LiveResultServer, LiveState, encode_request
from plstream.stream.live.server import _InFlight

WAIT_S = 20.0


def _wait_for(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _history(frames: int, spots: int) -> LiveState:
    state = LiveState({"run_uid": "r", "result_path": "x.h5"}, lambda: {"state": "running"})
    intensity = np.arange(spots, dtype=np.float32)
    on = np.ones(spots, np.int8)
    for t in range(frames):
        row = SimpleNamespace(index=t, seq=t, timestamp=t * 0.01, drift_xy=np.zeros(2), intensity=intensity, state=on)
        state.append(row)
    state.set_spots(np.arange(spots, dtype=float), np.arange(spots, dtype=float), np.zeros(spots, np.int64))
    return state


def _greedy_viewer(context: zmq.Context, endpoint: str, request_id: int) -> zmq.Socket:
    """A viewer that asks for the whole history once and never reads."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, 1)
    socket.connect(endpoint)
    socket.send_multipart([request_id.to_bytes(8, "little"), *encode_request(LiveRequest(max_frames=1_000_000))])
    return socket


def test_in_flight_bookkeeping():
    flight = _InFlight(limit_bytes=100)
    assert flight.has_room(500)  # one reply always fits when nothing is in flight
    flight.charge(b"a", 7, 60)
    assert not flight.has_room(50) and flight.has_room(40)
    flight.charge(b"b", 8, 40)
    flight.charge(b"c", 8, 10)
    assert (flight.total, flight.peers) == (110, 3)
    assert flight.release(b"a") == (7, 60) and flight.release(b"a") is None  # it asked again
    assert flight.left(8) == 2 and (flight.total, flight.peers) == (0, 0)  # its connection closed


def test_greedy_viewers_cannot_grow_the_server_and_are_released_when_they_leave(context):
    page, budget, viewers = 64 << 10, 256 << 10, 12
    state = _history(frames=2000, spots=100)  # ~1 MB of rows: each viewer asks for all of it
    with LiveResultServer(
        context, "tcp://127.0.0.1:0", state.update_for, max_reply_bytes=page, max_queued_bytes=budget
    ) as server:
        sockets = [_greedy_viewer(context, server.endpoint, i + 1) for i in range(viewers)]
        try:
            assert _wait_for(lambda: server.counters["requests"] == viewers)
            assert _wait_for(lambda: server.counters["replies"] + server.counters["refused"] == viewers)
            replies = server.counters["replies"]
            assert 1 <= replies <= budget // page, server.counters
            assert server.counters["refused"] == viewers - replies
            assert 0 < server.queued_bytes <= budget and server.viewers_waiting == replies
            assert server.queued_bytes <= replies * (page + 4096)  # each reply is one page (+ its small header)
        finally:
            for socket in sockets:
                socket.close(linger=0)
        assert _wait_for(lambda: server.queued_bytes == 0), "the budget was not released when the viewers left"
        assert server.viewers_waiting == 0 and server.counters["released_on_leave"] == replies


def test_a_reading_viewer_gets_the_whole_history_page_by_page(context):
    state = _history(frames=3000, spots=50)
    page = 100 << 10
    with (
        LiveResultServer(context, "tcp://127.0.0.1:0", state.update_for, max_reply_bytes=page) as server,
        LiveResultClient(context, server.endpoint, timeout_s=WAIT_S) as client,
    ):
        request, rows = LiveRequest(max_frames=1_000_000), []
        for _ in range(100):
            update = client.fetch(request)
            assert update is not None
            assert update.intensity.nbytes + update.state.nbytes <= page
            rows.append(update.seq)
            if not update.more:
                break
            request = LiveRequest(update.session_id, update.first_frame + update.n_frames, max_frames=1_000_000)
            assert _wait_for(lambda: server.viewers_waiting == 1)  # one reply held: asking again released the last
        np.testing.assert_array_equal(np.concatenate(rows), np.arange(3000))
        assert len(rows) > 1 and server.queued_bytes <= page + 4096


@pytest.mark.parametrize("bad", [{"max_reply_bytes": 0}, {"max_queued_bytes": 0}, {"send_hwm": 0}])
def test_limits_must_be_positive(context, bad):
    with pytest.raises(ValueError, match=">= 1"):
        LiveResultServer(context, "tcp://127.0.0.1:0", lambda request: None, **bad)


def test_a_viewer_that_reads_is_never_dropped(context):
    """With one reply queued per viewer, the answer to a viewer that has just read must still be queued at once."""
    state = _history(frames=100, spots=20)
    with (
        LiveResultServer(context, "tcp://127.0.0.1:0", state.update_for) as server,
        LiveResultClient(context, server.endpoint, timeout_s=2.0) as client,
    ):
        for _ in range(1000):
            assert client.fetch(LiveRequest(max_frames=50)) is not None, server.counters
        assert server.counters["dropped"] == 0 and client.counters["timeouts"] == 0
