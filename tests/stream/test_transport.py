"""Publisher and subscriber over real ZeroMQ sockets on 127.0.0.1 (free ports, bounded waits)."""

from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from plstream.acquire_adapters.base import Frame, InputError
from plstream.stream import (
    ConsumerLost,
    ConsumerTimeout,
    EndMessage,
    FrameMessage,
    FramePublisher,
    FrameSubscriber,
    HeartbeatMessage,
    SequenceTracker,
    StartMessage,
    StreamError,
    StreamStopped,
    publish,
    wire,
)

ANY_PORT = "tcp://127.0.0.1:0"
RECEIVE_S = 10.0  # generous per-receive limit; tests never wait for it unless something is broken
JOIN_S = 20.0


class FakeSource:
    """``n`` frames of ``shape``; optionally fails after ``fail_after`` frames or waits on ``pause`` events."""

    def __init__(self, n=20, shape=(32, 48), dtype=np.uint16, fail_after=None, pauses=None):
        self.n, self.shape, self.dtype = n, shape, dtype
        self.fail_after = fail_after
        self.pauses = pauses or {}  # seq -> threading.Event waited on (bounded) before yielding seq
        self.exhausted = threading.Event()

    def describe(self):
        return {"source": "fake", "shape": list(self.shape), "dtype": np.dtype(self.dtype).name, "n_frames": self.n}

    def image(self, seq):
        return np.full(self.shape, seq % 251, self.dtype)

    def __iter__(self):
        for seq in range(self.n):
            if seq == self.fail_after:
                raise InputError("fake.tif", f"page {seq} is truncated")
            if seq in self.pauses:
                self.pauses[seq].wait(JOIN_S)
            yield Frame(seq=seq, timestamp=seq * 0.01, data=self.image(seq), metadata={"i": seq})
        self.exhausted.set()

    def stop(self):
        self.pauses = {}

    def close(self):
        pass


class Background:
    """Runs ``publish`` (or any call) in a thread and keeps its result or exception."""

    def __init__(self, target, *args, **kwargs):
        self.result = self.error = None
        self._thread = threading.Thread(target=self._run, args=(target, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, target, args, kwargs):
        try:
            self.result = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self):
        self._thread.join(JOIN_S)
        assert not self._thread.is_alive(), f"did not finish within {JOIN_S} s"
        return self


def publish_to(endpoint, source, **kwargs):
    """What a source process does: connect a publisher to the analyzer's endpoint and publish."""
    context = zmq.Context()
    try:
        with FramePublisher(context, endpoint, bind=False, send_hwm=kwargs.pop("send_hwm", 2)) as publisher:
            return publish(source, publisher, heartbeat_interval_s=kwargs.pop("heartbeat_interval_s", 5.0), **kwargs)
    finally:
        context.destroy(linger=0)


def receive_run(subscriber, *, per_message=None, max_messages=10_000, messages=None, answer=True):
    """Receive until ``end``; returns all messages (frames' data copied).

    With ``answer``, it says ``ready`` to each start and ``done`` to the end, as a consumer
    does (a source sending with ``publish`` waits for both); without, it stays silent (for
    tests that send with the publisher's own methods and close it before this reads).
    """
    messages = [] if messages is None else messages
    for _ in range(max_messages):
        message = subscriber.receive(RECEIVE_S)
        assert message is not None, f"nothing received for {RECEIVE_S} s; got {len(messages)} messages"
        if answer and isinstance(message, StartMessage):
            assert subscriber.send_ready(message.run_uid)
        if answer and isinstance(message, EndMessage):
            assert subscriber.send_done(message.run_uid, len(frames_of(messages)))
        if isinstance(message, FrameMessage):
            message = FrameMessage(**{**message.__dict__, "data": message.data.copy()})
        messages.append(message)
        if per_message is not None:
            per_message(message)
        if isinstance(message, EndMessage):
            return messages
    raise AssertionError(f"no end message in {max_messages} messages")


def frames_of(messages):
    return [m for m in messages if isinstance(m, FrameMessage)]


def tracked(messages, tracker=None):
    """A :class:`SequenceTracker` that has observed ``messages`` (the consumer's accounting)."""
    tracker = tracker or SequenceTracker()
    for message in messages:
        tracker.observe(message)
    return tracker


@pytest.fixture
def analyzer(context):
    """A bound PULL subscriber, as the analyzer in ``plstream run``."""
    with FrameSubscriber(context, ANY_PORT, bind=True, pattern="data", receive_hwm=2) as subscriber:
        yield subscriber


# ---------------------------------------------------------------- lossless data path
def test_lossless_push_pull_with_a_slow_consumer(analyzer):
    source = FakeSource(n=40, shape=(200, 200))  # 80 kB frames: sent without a copy
    producer = Background(publish_to, analyzer.endpoint, source)
    messages = receive_run(analyzer, per_message=lambda m: time.sleep(0.005))
    producer.join()
    assert producer.error is None
    assert isinstance(messages[0], StartMessage) and messages[0].source["n_frames"] == 40
    frames = frames_of(messages)
    assert [f.seq for f in frames] == list(range(40))
    for f in frames:
        np.testing.assert_array_equal(f.data, source.image(f.seq))
        assert f.metadata["i"] == f.seq and isinstance(f.metadata["t_pub"], float)  # the publisher stamps t_pub
    end = messages[-1]
    assert (end.reason, end.n_frames, end.message) == ("complete", 40, "")
    assert end.counters["frames_sent"] == 40 and end.counters["dropped_queue_full"] == 0
    assert producer.result == end.counters
    sequence = tracked(messages)
    assert sequence.gaps == [] and sequence.frames_missing == 0
    assert sequence.counters["duplicates"] == sequence.counters["late"] == 0 and analyzer.counters["malformed"] == 0


def test_heartbeats_are_sent_while_the_source_is_idle(analyzer):
    resume = threading.Event()
    producer = Background(publish_to, analyzer.endpoint, FakeSource(n=3, pauses={1: resume}), heartbeat_interval_s=0.05)

    def release_after_a_heartbeat(message):
        if isinstance(message, HeartbeatMessage) and message.last_seq == 0:  # sent while the source waits
            resume.set()

    messages = receive_run(analyzer, per_message=release_after_a_heartbeat)
    producer.join()
    assert resume.is_set() and analyzer.counters["heartbeats"] >= 1
    assert [f.seq for f in frames_of(messages)] == [0, 1, 2] and messages[-1].counters["heartbeats"] >= 1


# ---------------------------------------------------------------- monitor
def test_two_viewers_on_the_pub_monitor_both_receive_frames(context, analyzer):
    with (
        FramePublisher(context, analyzer.endpoint, bind=False, monitor_endpoint=ANY_PORT) as publisher,
        FrameSubscriber(context, publisher.monitor_endpoint, pattern="monitor") as viewer1,
        FrameSubscriber(context, publisher.monitor_endpoint, pattern="monitor") as viewer2,
    ):
        publisher.send_start(FakeSource().describe())
        assert isinstance(analyzer.receive(RECEIVE_S), StartMessage)
        heard = set()
        for _ in range(200):  # slow joiners: heartbeat until both subscriptions have arrived
            publisher.send_heartbeat()
            assert isinstance(analyzer.receive(RECEIVE_S), HeartbeatMessage)
            heard |= {i for i, v in enumerate((viewer1, viewer2)) if v.receive(0.05) is not None}
            if heard == {0, 1}:
                break
        assert heard == {0, 1}, "the viewers never received a heartbeat"
        for viewer in (viewer1, viewer2):  # leftover heartbeats would fill the tiny monitor queue
            for _ in range(400):
                if viewer.receive(0.05) is None:
                    break
        source = FakeSource(n=5)
        for frame in source:
            publisher.send_frame(frame)
            assert analyzer.receive(RECEIVE_S).seq == frame.seq
            time.sleep(0.01)  # a viewer is lossy by design (HWM 2): give it time to take each frame
        for viewer in (viewer1, viewer2):
            seen, sequence = [], SequenceTracker()
            for _ in range(50):
                message = viewer.receive(1.0 if not seen else 0.2)
                if message is None:
                    break
                sequence.observe(message)
                if isinstance(message, FrameMessage):
                    seen.append(message.seq)
                    np.testing.assert_array_equal(message.data, source.image(message.seq))
            assert seen and seen == sorted(seen), seen
            assert sequence.frames_missing == seen[-1] + 1 - len(seen)  # lossy, never silently


# ---------------------------------------------------------------- accounting
def test_skipped_late_and_repeated_seqs_over_the_wire(context, analyzer):
    with FramePublisher(context, analyzer.endpoint, bind=False, consumer_timeout_s=RECEIVE_S) as publisher:
        publisher.send_start(FakeSource().describe())
        for seq in (0, 1, 2, 5, 6, 4, 9, 6):
            publisher.send_frame(Frame(seq, 0.0, np.zeros((32, 48), np.uint16)))
        publisher.send_end("complete", {}, n_frames=12)
    messages = receive_run(analyzer, answer=False)  # the publisher is closed: answering it could cost messages
    assert [f.seq for f in frames_of(messages)] == [0, 1, 2, 5, 6, 4, 9, 6]  # the socket delivers all
    sequence = tracked(messages)
    assert sequence.gaps == [(3, 3), (7, 8), (10, 11)]  # the late frame 4 shrank the gap (3, 4)
    assert sequence.frames_missing == 5 and sequence.counters["late"] == 1
    assert sequence.counters["duplicates"] == 1 and sequence.counters["frames"] == 7


def test_each_run_is_accounted_on_its_own(context, analyzer):
    with FramePublisher(context, analyzer.endpoint, bind=False, consumer_timeout_s=RECEIVE_S) as publisher:
        runs = {}
        for run, seqs in (("a", (0, 3)), ("b", (1,))):
            publisher.send_start(FakeSource().describe(), run_uid=run)
            for seq in seqs:
                publisher.send_frame(Frame(seq, 0.0, np.zeros((2, 2), np.uint8)))
            publisher.send_end("complete", {})
            runs[run] = receive_run(analyzer)
    first = tracked(runs["a"])
    assert first.run_uid == "a" and first.gaps == [(1, 2)]
    tracked(runs["b"], first)  # a consumer of run a ignores run b's frames
    assert first.gaps == [(1, 2)] and first.counters["other_run"] == 1
    assert tracked(runs["b"]).gaps == [(0, 0)]


def test_malformed_messages_are_counted_and_the_stream_goes_on(context, analyzer, caplog):
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(analyzer.endpoint)

    def frame(seq):
        return wire.encode(FrameMessage("r", seq, 0.0, np.full((8, 8), seq, np.uint16), {}))

    bad_payload = frame(3)
    bad_payload[1] = bytes(bad_payload[1])[:-2]
    valid = [wire.encode(StartMessage("r", {}, (8, 8), "uint16", 0.0)), *(frame(s) for s in range(3))]
    malformed = [[b"not msgpack \xc1"], [msgpack.packb({"v": 99, "kind": "frame"})], bad_payload]
    tail = [*(frame(s) for s in range(3, 6)), wire.encode(EndMessage("r", 6, "complete", "", {}, 0.0))]
    with caplog.at_level(logging.WARNING, logger="plstream.stream.subscriber"):
        for parts in [*valid, *malformed, *tail]:
            raw.send_multipart(parts)
        messages = receive_run(analyzer)
    raw.close()
    assert [f.seq for f in frames_of(messages)] == list(range(6))
    assert analyzer.counters["malformed"] == 3 and tracked(messages).frames_missing == 0
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 3 and any("seq 3" in w and "bytes" in w for w in warnings)
    assert any("version 99" in w for w in warnings)


def test_a_flood_of_malformed_messages_is_counted_not_logged_line_by_line(context, analyzer, caplog):
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(analyzer.endpoint)
    with caplog.at_level(logging.WARNING, logger="plstream.stream.subscriber"):
        raw.send_multipart(wire.encode(StartMessage("r", {}, (8, 8), "uint16", 0.0)))
        for i in range(2000):
            raw.send_multipart([b"junk %d" % i])
        raw.send_multipart(wire.encode(EndMessage("r", 0, "complete", "", {}, 0.0)))
        messages = receive_run(analyzer)
        analyzer.close()  # says how many lines were left out
    raw.close()
    assert isinstance(messages[0], StartMessage) and isinstance(messages[-1], EndMessage)
    assert analyzer.counters["malformed"] == 2000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 5, lines[:10]
    assert any("were not logged" in line for line in lines)


# ---------------------------------------------------------------- ending a run
def test_source_error_mid_stream_sends_end_with_reason_error(analyzer):
    producer = Background(publish_to, analyzer.endpoint, FakeSource(n=10, fail_after=4))
    messages = receive_run(analyzer)
    producer.join()
    assert isinstance(producer.error, InputError)
    assert [f.seq for f in frames_of(messages)] == [0, 1, 2, 3]
    end = messages[-1]
    assert end.reason == "error" and "page 4 is truncated" in end.message and end.n_frames == 4


def test_stop_while_blocked_without_consumer_returns_promptly(context):
    stop = threading.Event()
    with FramePublisher(context, ANY_PORT, send_hwm=1, linger_ms=0) as publisher:
        producer = Background(publish, FakeSource(n=1000), publisher, stop_event=stop)
        time.sleep(0.3)  # let it block on the start message; nobody is listening
        stop.set()
        producer.join()
    assert producer.error is None
    assert producer.result["frames_sent"] == 0


@pytest.mark.parametrize("live", [False, True])
def test_a_source_stops_when_its_consumer_falls_silent(analyzer, live):
    """An analyzer that was killed or stopped never unblocks a send; its heartbeats stopping says so."""
    timeout_s = 1.0
    producer = Background(
        publish_to,
        analyzer.endpoint,
        FakeSource(n=1_000_000, shape=(64, 64)),
        peer_timeout_s=timeout_s,
        heartbeat_interval_s=0.1,
        queue_frames=8 if live else None,
    )
    start = analyzer.receive(RECEIVE_S)
    assert isinstance(start, StartMessage) and analyzer.send_ready(start.run_uid)
    for received in range(20):  # a consumer at work: frames in, heartbeats out
        assert isinstance(analyzer.receive(RECEIVE_S), (FrameMessage, HeartbeatMessage))
        assert analyzer.send_heartbeat(start.run_uid, received)
    silent_since = time.monotonic()  # ... and now it stops reading and answering, as if killed
    producer.join()
    waited = time.monotonic() - silent_since
    assert isinstance(producer.error, ConsumerLost), producer.error
    assert timeout_s <= waited < timeout_s + 3.0
    message = str(producer.error)
    assert f"the consumer at {analyzer.endpoint} has not answered" in message and "peer_timeout_s" in message
    assert ("dropped meanwhile" in message) == live


def test_blocked_send_raises_stream_stopped_or_consumer_timeout(context):
    with FramePublisher(context, ANY_PORT, consumer_timeout_s=0.3, linger_ms=0) as publisher:
        with pytest.raises(StreamStopped):
            publisher.send_start(FakeSource().describe(), should_stop=lambda: True)
        with pytest.raises(ConsumerTimeout, match=f"start the analyzer at {publisher.endpoint}"):
            publisher.send_heartbeat()


def test_live_mode_queue_overflow_is_counted_and_matches_the_gaps(analyzer):
    source = FakeSource(n=120, shape=(512, 512))  # 512 kB frames, so socket buffers hold few
    producer = Background(publish_to, analyzer.endpoint, source, queue_frames=2, send_hwm=1)
    start = analyzer.receive(RECEIVE_S)
    assert isinstance(start, StartMessage) and analyzer.send_ready(start.run_uid)
    assert source.exhausted.wait(JOIN_S), "the source never finished"  # the consumer reads nothing meanwhile
    messages = receive_run(analyzer, messages=[start])
    producer.join()
    counters = producer.result
    assert counters["frames_sent"] + counters["dropped_queue_full"] == counters["frames_produced"] == 120
    assert counters["dropped_queue_full"] > 0
    end = messages[-1]
    assert end.counters == counters and end.n_frames == 120
    assert analyzer.counters["frames"] == counters["frames_sent"]
    sequence = tracked(messages)
    assert sequence.frames_missing == counters["dropped_queue_full"]
    assert sum(last - first + 1 for first, last in sequence.gaps) == counters["dropped_queue_full"]


# ---------------------------------------------------------------- setup errors
def test_address_in_use_and_bad_endpoints_raise_stream_error(context, analyzer):
    with pytest.raises(StreamError, match=f"{analyzer.endpoint}.*in use.*choose another port"):
        FrameSubscriber(context, analyzer.endpoint, bind=True)
    with pytest.raises(StreamError, match="tcp://HOST:PORT"):
        FramePublisher(context, "tcp//nowhere")
    with pytest.raises(ValueError, match="pattern"):
        FrameSubscriber(context, ANY_PORT, pattern="pair")
