"""The live result protocol: round trips, the documented schema, a decoder that only raises
LiveProtocolError, and a server and client that survive bad peers, failing providers and restarts."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plstream.stream import (
    LIVE_STATES,
    LIVE_VERSION,
    LiveEndpointError,
    LiveProtocolError,
    LiveRequest,
    LiveResultClient,
    LiveResultServer,
    LiveUpdate,
    decode_request,
    decode_update,
    empty_update,
    encode_request,
    encode_update,
)
from plstream.stream.endpoints import is_loopback
from plstream.stream.live import wire as live_wire

pytestmark = pytest.mark.timeout(60)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "wire_format.md"
MAX = 1 << 26
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INFO = {
    "run_uid": "run-1",
    "shape": [6, 8],
    "source": {"source": "tiff"},
    "result_path": "/tmp/r.h5",
    "frame_rate_hz": 10.0,
    "psf_sigma_px": None,
}
STATUS = {
    "state": "running",
    "message": "",
    "frames_received": 9,
    "frames_analyzed": 7,
    "frames_failed": 0,
    "frames_missing": 0,
    "gaps": 0,
    "spots": 3,
    "source_frames": None,
    "frames_per_second": 50.0,
    "elapsed_s": 1.5,
    "lag_s": 0.02,
    "lag_frames": 2,
}
_DELETE = object()


def _update(
    n: int = 7, s: int = 3, *, first: int = 2, image: str | None = "uint16", mean: bool = True, seed: int = 0
) -> LiveUpdate:
    rng = np.random.default_rng(seed)
    intensity = rng.normal(1000, 50, (n, s)).astype(np.float32)
    intensity[: n // 2, : s // 2] = np.nan
    return LiveUpdate(
        session_id="sess-1",
        info=INFO,
        status=STATUS,
        first_frame=first,
        n_frames_total=first + n + 5,
        seq=np.arange(first, first + n, dtype=np.int64),
        timestamp=np.arange(n) * 0.1,
        drift_xy=rng.normal(0, 1, (n, 2)),
        intensity=intensity,
        state=rng.integers(-1, 2, (n, s)).astype(np.int8),
        spots_x=rng.uniform(0, 8, s),
        spots_y=rng.uniform(0, 6, s),
        spots_first_frame=np.arange(s, dtype=np.int64),
        image=None if image is None else (np.arange(48) % 200).astype(image).reshape(6, 8),
        image_frame=first + n - 1 if image else -1,
        image_version=4 if image else -1,
        mean_image=rng.random((6, 8), dtype=np.float32) if mean else None,
        mean_version=1 if mean else -1,
    )


def _assert_same(a: LiveUpdate, b: LiveUpdate) -> None:
    for f in fields(LiveUpdate):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None, f.name
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def _header(parts: list) -> dict:
    return msgpack.unpackb(parts[0], raw=False)


def _with_header(parts: list, **changes) -> list:
    header = {**_header(parts), **changes}
    return [msgpack.packb({k: v for k, v in header.items() if v is not _DELETE}), *parts[1:]]


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    ("n", "s", "image", "mean"),
    [(7, 3, "uint16", True), (0, 0, None, False), (5, 0, None, True), (0, 4, "float64", False), (1, 1, "uint8", True)],
)
def test_update_round_trip(n, s, image, mean):
    update = _update(n, s, image=image, mean=mean)
    parts = encode_update(update)
    assert len(parts) == 1 + 8 + (image is not None) + mean
    decoded = decode_update(parts, max_bytes=MAX)
    _assert_same(decoded, update)
    assert (decoded.n_frames, decoded.n_spots, decoded.more) == (n, s, True)


@pytest.mark.parametrize("dtype", live_wire.ARRAY_DTYPES["image"])
def test_every_image_dtype_round_trips(dtype):
    _assert_same(decode_update(encode_update(_update(image=dtype)), max_bytes=MAX), _update(image=dtype))


def test_large_update_round_trips_through_zmq_frames_without_copy_on_encode():
    update = _update(20000, 50, image="uint16", seed=1)
    parts = encode_update(update)
    assert np.shares_memory(np.frombuffer(parts[4], np.float32), update.intensity)
    decoded = decode_update([zmq.Frame(bytes(p)) for p in parts], max_bytes=MAX)
    _assert_same(decoded, update)
    assert not decoded.intensity.flags.writeable


def test_empty_update_round_trips_and_big_endian_strided_arrays_go_out_little_endian():
    empty = empty_update("s", {}, {"state": "waiting"}, first_frame=4)
    _assert_same(decode_update(encode_update(empty), max_bytes=0), empty)
    update = replace(_update(4, 2), drift_xy=np.zeros((4, 4), ">f8")[:, ::2] + 1.5)
    decoded = decode_update(encode_update(update), max_bytes=MAX)
    assert decoded.drift_xy.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(decoded.drift_xy, update.drift_xy)


def test_request_round_trip():
    request = LiveRequest(session_id="sess-1", since_frame=12, image_version=3, mean_version=-1, max_frames=100)
    parts = encode_request(request)
    assert len(parts) == 1 and decode_request(parts) == request
    assert decode_request([memoryview(parts[0])]) == request
    assert decode_request(encode_request(LiveRequest())) == LiveRequest()


# ---------------------------------------------------------------- the documented schema
def _live_tables() -> dict[str, list[list[str]]]:
    """Rows (cells) of the table under each ``### Live ...`` heading of the live protocol section."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(f"## Live result protocol (version {LIVE_VERSION})", 1)
    assert len(section) == 2, (
        f"docs/wire_format.md needs a '## Live result protocol (version {LIVE_VERSION})' section "
        "(LIVE_VERSION in stream/live/messages.py)"
    )
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in section[1].splitlines():
        if line.startswith("## "):
            break
        if line.startswith("### "):
            heading = line[4:].strip()
            tables[heading] = []
        elif heading and re.match(r"^\|\s*`\w+`", line):
            tables[heading].append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return tables


def test_live_schema_matches_docs():
    tables = _live_tables()
    fix = (
        "update the table under '### {0}' in docs/wire_format.md to match stream/live/wire.py (bump LIVE_VERSION "
        "in stream/live/messages.py if the change is incompatible)"
    )
    assert list(live_wire.REQUEST_FIELDS) == [f.name for f in fields(LiveRequest)], (
        "live_wire.REQUEST_FIELDS must list the LiveRequest fields in order"
    )
    request = [row[0] for row in tables["Live request header"]]
    assert request == ["v", "kind", *live_wire.REQUEST_FIELDS], fix.format("Live request header")
    header_fields = [name for name in live_wire.UPDATE_FIELDS if name != "arrays"]
    assert set(header_fields) | set(live_wire.ARRAY_DTYPES) == {f.name for f in fields(LiveUpdate)}, (
        "every LiveUpdate field must be a header field (live_wire.UPDATE_FIELDS) or an array (ARRAY_DTYPES)"
    )
    update = [row[0] for row in tables["Live update header"]]
    assert update == ["v", "kind", *live_wire.UPDATE_FIELDS], fix.format("Live update header")
    arrays = tables["Live update arrays"]
    assert [row[0] for row in arrays] == list(live_wire.ARRAY_DTYPES), fix.format("Live update arrays")
    for name, dtypes, shape, *_ in arrays:
        assert set(re.split(r",\s*|\s+or\s+", dtypes)) == set(live_wire.ARRAY_DTYPES[name]), (
            fix.format("Live update arrays") + f" (dtypes of {name!r})"
        )
        dims = ", ".join(str(d).removeprefix("mean_") for d in live_wire.ARRAY_DIMS[name])
        assert shape.replace(",)", ")") == f"({dims})", fix.format("Live update arrays") + f" (shape of {name!r})"
    text = DOCS.read_text(encoding="utf-8")
    for state in LIVE_STATES:
        assert f'`"{state}"`' in text, f"docs/wire_format.md must describe status state {state!r} (LIVE_STATES)"


# ---------------------------------------------------------------- rejections
def _rejects(parts, match: str, max_bytes: int = MAX) -> None:
    with pytest.raises(LiveProtocolError, match=match):
        decode_update(parts, max_bytes=max_bytes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"v": 2}, "version 2.*version 1"),
        ({"v": True}, "version True"),
        ({"kind": "request"}, "kind is 'request'"),
        ({"session_id": ""}, "'session_id'"),
        ({"first_frame": -1}, "'first_frame'"),
        ({"first_frame": 1.0}, "'first_frame'.*integer"),
        ({"n_frames_total": 3}, "go past n_frames_total=3"),
        ({"image_version": -1}, "carries 'image' but image_version is -1"),
        ({"mean_version": -2}, "'mean_version'"),
        ({"info": [1]}, "'info'.*map"),
        ({"info": {"shape": "6x8"}}, "'info'.*'shape'"),
        ({"status": {"message": "x"}}, "'status'.*'state' is missing"),
        ({"status": {"state": "paused"}}, "'status'.*'paused' is not one of"),
        ({"status": {"state": "running", "spots": -1}}, "'spots'"),
        ({"status": {"state": "running", "lag_s": "slow"}}, "'lag_s'"),
        ({"status": _DELETE}, "'status' is missing"),
        ({"arrays": _DELETE}, "'arrays' is missing"),
        ({"arrays": "seq"}, "'arrays'.*list"),
    ],
)
def test_bad_update_headers_are_rejected_with_what_is_wrong(changes, match):
    _rejects(_with_header(encode_update(_update()), **changes), match)


def _arrays(**changes) -> list:
    parts = encode_update(_update())
    specs = {name: [dtype, shape] for name, dtype, shape in _header(parts)["arrays"]}
    for name, change in changes.items():
        if change is _DELETE:
            specs.pop(name)
        else:
            specs[name] = change
    return _with_header(parts, arrays=[[name, *spec] for name, spec in specs.items()])[:1] + parts[1:]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"seq": ["int32", [7]]}, "'seq' has dtype 'int32'"),
        ({"image": ["float16", [6, 8]]}, "'image' has dtype 'float16'"),
        ({"intensity": ["float32", [6, 3]]}, "'intensity' has n=6.*'seq' has n=7"),
        ({"spots_y": ["float64", [2]]}, "'spots_y' has S=2.*'intensity' has S=3"),
        ({"drift_xy": ["float64", [7, 3]]}, "'drift_xy' has 3 on axis 1, must have 2"),
        ({"state": ["int8", [7]]}, "'state' must have a shape of 2"),
        ({"state": ["int8", [7, -3]]}, "'state' has shape"),
        ({"mean_image": ["float32", [0, 8]]}, "image has rows and cols > 0"),
        ({"spots_x": _DELETE}, "spots_x are missing"),
        ({"bogus": ["int8", [1]]}, "unknown array 'bogus'"),
    ],
)
def test_bad_array_lists_are_rejected(changes, match):
    _rejects(_arrays(**changes), match)


def test_part_counts_lengths_and_sizes_are_checked():
    parts = encode_update(_update())
    _rejects(parts[:-1], "has 10 parts.*needs 11")
    _rejects([*parts, b""], "has 12 parts")
    _rejects([], "has no parts")
    _rejects([parts[0], *parts[1:4], bytes(parts[4])[:-1], *parts[5:]], r"part 4 \('intensity'\) is 83 bytes.*84")
    _rejects(parts, "more than the 100 allowed", max_bytes=100)
    _rejects(_with_header(parts, arrays=[*_header(parts)["arrays"], ["seq", "int64", [7]]]), "listed twice")
    _rejects([msgpack.packb([1])], "not a map")
    _rejects([b"\xc1"], "not valid msgpack")
    _rejects([msgpack.packb({"v": 1, "kind": "update", "x": msgpack.ExtType(1, b"")})], "extension type")
    _rejects([msgpack.packb({"v": 1, "kind": "update", "x": msgpack.Timestamp(1, 0)})], "not valid msgpack")
    _rejects([msgpack.packb({1: 2})], "not valid msgpack")
    _rejects(["text"], "part 0 is not a byte buffer")
    _rejects(None, "sequence of message parts")
    _rejects([b"\x80" + b"\x00" * (live_wire.MAX_UPDATE_HEADER_BYTES)], "more than the")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_frames": 0}, "'max_frames'"),
        ({"max_frames": 1_000_001}, "'max_frames'"),
        ({"since_frame": -1}, "'since_frame'"),
        ({"since_frame": 2**64 - 1}, "'since_frame'"),
        ({"image_version": -2}, "'image_version'"),
        ({"mean_version": False}, "'mean_version'.*integer"),
        ({"session_id": "x" * 257}, "'session_id'.*257"),
        ({"session_id": None}, "'session_id'"),
        ({"kind": "update"}, "kind is 'update'"),
        ({"v": 0}, "version 0"),
        ({"max_frames": _DELETE}, "missing"),
    ],
)
def test_bad_requests_are_rejected(changes, match):
    with pytest.raises(LiveProtocolError, match=match):
        decode_request(_with_header(encode_request(LiveRequest()), **changes))


def test_request_part_count_and_encode_checks():
    with pytest.raises(LiveProtocolError, match="has 2 parts"):
        decode_request([*encode_request(LiveRequest()), b""])
    with pytest.raises(LiveProtocolError, match="more than the 65536"):
        decode_request([b"\x00" * 65537])
    with pytest.raises(LiveProtocolError, match="'max_frames'"):
        encode_request(LiveRequest(max_frames=0))
    with pytest.raises(LiveProtocolError, match="expected a LiveRequest"):
        encode_request({"since_frame": 0})


def test_encode_update_refuses_what_decode_would_reject():
    with pytest.raises(LiveProtocolError, match="'intensity' is float64.*astype"):
        encode_update(replace(_update(), intensity=_update().intensity.astype(np.float64)))
    with pytest.raises(LiveProtocolError, match="S=2"):
        encode_update(replace(_update(), spots_x=np.zeros(2)))
    with pytest.raises(LiveProtocolError, match="image_version is -1"):
        encode_update(replace(_update(), image_version=-1))
    with pytest.raises(LiveProtocolError, match="cannot encode the header"):
        encode_update(replace(_update(), info={"path": Path("/tmp")}))
    with pytest.raises(LiveProtocolError, match="expected a LiveUpdate"):
        encode_update(LiveRequest())
    with pytest.raises(LiveProtocolError, match="'status'.*'state'"):
        encode_update(empty_update("s", {}, {}))


# ---------------------------------------------------------------- fuzzing
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["update", "request", "running", "int64", "float32", "seq", "image"]),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_VALID = [encode_update(_update()), encode_update(_update(0, 0, image=None, mean=False)), encode_request(LiveRequest())]


def _decodes_or_error(parts) -> None:
    for decode in (decode_request, lambda p: decode_update(p, max_bytes=4096)):
        try:
            decoded = decode(parts)
        except LiveProtocolError:
            continue
        assert isinstance(decoded, (LiveRequest, LiveUpdate))


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_fuzz_random_parts(parts):
    _decodes_or_error(parts)


@FUZZ
@given(
    st.sampled_from(_VALID),
    st.sampled_from(["v", "kind", "arrays", *live_wire.REQUEST_FIELDS, *live_wire.UPDATE_FIELDS]),
    st.one_of(st.just(_DELETE), _value),
)
def test_fuzz_one_header_field_replaced_or_removed(parts, key, value):
    _decodes_or_error(_with_header(parts, **{key: value}))


@FUZZ
@given(st.sampled_from(_VALID), st.data())
def test_fuzz_header_bytes_mutated(parts, data):
    head = bytearray(parts[0])
    for _ in range(data.draw(st.integers(1, 4))):
        head[data.draw(st.integers(0, len(head) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(head)))
    _decodes_or_error([bytes(head[:cut] if data.draw(st.booleans()) else head), *parts[1:]])


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*live_wire.ARRAY_DTYPES, "x"]),
            st.sampled_from(["int64", "float64", "float32", "int8", "uint16", "object", ">f8"]),
            st.lists(st.integers(-2, 2**41), max_size=3),
        ),
        max_size=11,
    ),
    st.lists(st.binary(max_size=64), max_size=11),
)
def test_fuzz_array_lists_against_buffers(specs, buffers):
    header = _header(encode_update(_update(0, 0, image=None, mean=False)))
    header["arrays"] = [list(spec) for spec in specs]
    _decodes_or_error([msgpack.packb(header), *buffers])


# ---------------------------------------------------------------- server and client
class _Results:
    """A provider over fixed arrays: 250 frames, 4 spots, image version 2, mean image version 0."""

    def __init__(self, n: int = 250, s: int = 4, session: str = "sess-A") -> None:
        rng = np.random.default_rng(5)
        self.session, self.n = session, n
        self.seq = np.arange(n, dtype=np.int64)
        self.intensity = rng.normal(100, 5, (n, s)).astype(np.float32)
        self.state = (self.intensity > 100).astype(np.int8)
        self.spots = rng.uniform(0, 32, (2, s))
        self.image = rng.integers(0, 4000, (16, 32)).astype(np.uint16)
        self.hook: Callable[[LiveRequest], None] = lambda request: None

    def __call__(self, request: LiveRequest) -> LiveUpdate:
        self.hook(request)
        start = min(request.since_frame if request.session_id == self.session else 0, self.n)
        rows = slice(start, min(start + request.max_frames, self.n))
        new_image = request.image_version < 2
        return LiveUpdate(
            session_id=self.session,
            info={"run_uid": "r"},
            status={"state": "running"},
            first_frame=start,
            n_frames_total=self.n,
            seq=self.seq[rows],
            timestamp=self.seq[rows] * 0.05,
            drift_xy=np.zeros((len(self.seq[rows]), 2)),
            intensity=self.intensity[rows],
            state=self.state[rows],
            spots_x=self.spots[0],
            spots_y=self.spots[1],
            spots_first_frame=np.zeros(self.spots.shape[1], np.int64),
            image=self.image if new_image else None,
            image_frame=self.n - 1,
            image_version=2,
            mean_image=np.ones((16, 32), np.float32) if request.mean_version < 0 else None,
            mean_version=0,
        )


@pytest.fixture
def served(context):
    results = _Results()
    with LiveResultServer(context, "tcp://127.0.0.1:0", results) as server:
        yield server, results


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_late_joiner_gets_every_row_page_by_page_and_images_once(context, served):
    server, results = served
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", server.endpoint) and not server.endpoint.endswith(":0")
    pages: list[LiveUpdate] = []
    request = LiveRequest(max_frames=100)
    with LiveResultClient(context, server.endpoint, timeout_s=5.0) as client:
        for _ in range(10):
            update = client.fetch(request)
            assert update is not None and client.connected
            pages.append(update)
            if not update.more:
                break
            request = LiveRequest(
                update.session_id,
                update.first_frame + update.n_frames,
                update.image_version,
                update.mean_version,
                max_frames=100,
            )
    assert [p.n_frames for p in pages] == [100, 100, 50] and [p.first_frame for p in pages] == [0, 100, 200]
    assert pages[0].image is not None and pages[0].mean_image is not None
    assert all(p.image is None and p.mean_image is None for p in pages[1:])
    np.testing.assert_array_equal(np.concatenate([p.intensity for p in pages]), results.intensity)
    np.testing.assert_array_equal(np.concatenate([p.seq for p in pages]), results.seq)
    np.testing.assert_array_equal(pages[0].image, results.image)
    assert _wait_for(lambda: server.counters["replies"] == 3), server.counters  # counted just after the send
    assert server.counters["requests"] == 3
    assert client.counters["replies"] == 3 and client.counters["timeouts"] == 0


def test_malformed_requests_are_counted_and_the_server_keeps_answering(context, served):
    server, _ = served
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(server.endpoint)
    good = encode_request(LiveRequest())[0]
    for message in (
        [b"garbage"],
        [b"\x01" * 8, b"\xc1"],
        [b"x" * 65, good],
        [b"id", good, b"extra"],
        [b"id", msgpack.packb({"v": 1, "kind": "request"})],
    ):
        raw.send_multipart(message)
    assert _wait_for(lambda: server.counters["malformed"] == 5), server.counters
    raw.send_multipart([b"id", b"x" * 70000])  # over MAXMSGSIZE: ZeroMQ drops this peer
    with LiveResultClient(context, server.endpoint, timeout_s=5.0) as client:
        assert client.fetch(LiveRequest(max_frames=10)).n_frames == 10
    assert raw.poll(0) == 0, "a malformed request must get no reply"
    raw.close()
    assert server.running and server.counters["provider_errors"] == 0


def test_provider_errors_are_counted_and_the_server_lives(context, served):
    server, results = served

    def fail(request: LiveRequest) -> None:
        if request.since_frame == 13:
            raise RuntimeError("provider bug")

    results.hook = fail
    with LiveResultClient(context, server.endpoint, timeout_s=0.5) as client:
        assert client.fetch(LiveRequest("sess-A", since_frame=13)) is None and not client.connected
        assert _wait_for(lambda: server.counters["provider_errors"] == 1)
        results.hook = lambda request: None
        results.session = ""  # an empty session id cannot be encoded: counted as a provider error too
        assert client.fetch(LiveRequest()) is None
        assert _wait_for(lambda: server.counters["provider_errors"] == 2)
        results.session = "sess-A"
        for _ in range(5):  # bounded: a loaded machine may need a retry
            if (update := client.fetch(LiveRequest("sess-A", since_frame=13))) is not None:
                break
        assert update is not None and update.first_frame == 13 and client.connected
    assert server.running


def test_a_late_reply_never_answers_a_later_request(context, served):
    server, results = served
    release = threading.Event()
    results.hook = lambda request: release.wait(5) if request.since_frame == 99 else None
    with LiveResultClient(context, server.endpoint, timeout_s=0.3) as client:
        assert client.fetch(LiveRequest("sess-A", since_frame=99)) is None
        release.set()  # the reply to frame 99 goes to the closed socket
        for _ in range(10):  # bounded: a loaded machine may need a retry
            if (update := client.fetch(LiveRequest("sess-A", since_frame=5, max_frames=3))) is not None:
                break
        assert update is not None and update.first_frame == 5 and update.n_frames == 3
        assert client.counters["stale"] == 0, "the late reply must not even reach the new socket"


def _fake_server(context, replies: Callable[[bytes, list], list[list]]) -> tuple[str, threading.Thread]:
    """A raw ROUTER that answers one request with the messages ``replies(envelope, update_parts)``."""
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:0")

    def serve() -> None:
        if router.poll(5000):
            identity, envelope, *_ = router.recv_multipart()
            for message in replies(envelope, encode_update(_update())):
                router.send_multipart([identity, *message])
        router.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return router.getsockopt(zmq.LAST_ENDPOINT).decode(), thread


def test_client_discards_stale_replies_and_counts_malformed_ones(context):
    endpoint, thread = _fake_server(context, lambda env, parts: [[b"\x00" * 8, *parts], [env, *parts]])
    with LiveResultClient(context, endpoint, timeout_s=5.0) as client:
        _assert_same(client.fetch(LiveRequest()), _update())
        assert client.counters["stale"] == 1
    thread.join(5)
    endpoint, thread = _fake_server(context, lambda env, parts: [[env, b"junk"]])
    with LiveResultClient(context, endpoint, timeout_s=5.0) as client:
        assert client.fetch(LiveRequest()) is None and client.counters["malformed"] == 1 and not client.connected
    thread.join(5)


def test_client_times_out_without_a_server_then_finds_a_restarted_one(context):
    results = _Results()
    with LiveResultServer(context, "tcp://127.0.0.1:0", results) as first:
        endpoint = first.endpoint
    with LiveResultClient(context, endpoint, timeout_s=0.3) as client:
        started = time.monotonic()
        assert client.fetch(LiveRequest()) is None
        assert 0.25 <= time.monotonic() - started < 2.0 and not client.connected
        assert client.counters["timeouts"] == 1
        server = None
        for _ in range(50):  # the old listener closes asynchronously
            try:
                server = LiveResultServer(context, endpoint, results)
                server.start()
                break
            except LiveEndpointError:
                time.sleep(0.05)
        assert server is not None and server.running
        with server:
            update = None
            for _ in range(10):
                if (update := client.fetch(LiveRequest(max_frames=5))) is not None:
                    break
            assert update is not None and update.n_frames == 5 and client.connected


def test_bind_in_use_says_what_to_do_and_close_is_idempotent(context, served):
    server, results = served
    other = LiveResultServer(context, server.endpoint, results)
    with pytest.raises(LiveEndpointError, match="is in use.*--live"):
        other.start()
    other.close()
    other.close()
    server.close()
    server.close()
    assert not server.running
    with pytest.raises(RuntimeError, match="make a new one"):
        server.start()
    never_started = LiveResultServer(context, "tcp://127.0.0.1:0", results)
    never_started.close()
    client = LiveResultClient(context, "tcp://127.0.0.1:1", timeout_s=0.1)
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.fetch(LiveRequest())
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        LiveResultClient(context, "nonsense")


def test_loopback_detection_for_the_unencrypted_warning():
    assert is_loopback("tcp://127.0.0.1:5557") and is_loopback("tcp://[::1]:5557")
    assert is_loopback("ipc:///tmp/live") and is_loopback("tcp://localhost:1")
    assert not is_loopback("tcp://0.0.0.0:5557") and not is_loopback("tcp://*:5557")
    assert not is_loopback("tcp://192.168.1.4:5557") and not is_loopback("tcp://eth0:5557")
