"""The wire format: round trips, the documented schema, and a decoder that only ever raises ProtocolError."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plstream.stream import wire
from plstream.stream.messages import (
    ALLOWED_DTYPES,
    MESSAGE_TYPES,
    WIRE_VERSION,
    EndMessage,
    FrameMessage,
    HeartbeatMessage,
    StartMessage,
    header_fields,
)
from plstream.stream.wire import ProtocolError, decode, encode

DOCS = Path(__file__).resolve().parents[2] / "docs" / "wire_format.md"
MAX = 1 << 20
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

START = StartMessage(
    run_uid="run-1",
    source={"source": "tiff", "shape": [4, 6], "dtype": "uint16", "n_frames": 3, "camera": {"gain_adu_per_e": 2.0}},
    shape=(4, 6),
    dtype="uint16",
    timestamp=1700000000.25,
)
END = EndMessage(
    run_uid="run-1",
    n_frames=3,
    reason="error",
    message="frame 3 is truncated",
    counters={"frames_sent": 3, "blocked_s": 0.5},
    timestamp=1700000001.0,
)
HEARTBEAT = HeartbeatMessage(run_uid="run-1", last_seq=-1, timestamp=1700000000.5, counters={"heartbeats": 1})


def _frame(dtype: str = "uint16", shape: tuple[int, int] = (4, 6), seq: int = 7) -> FrameMessage:
    data = (np.arange(shape[0] * shape[1]) % 97).astype(dtype).reshape(shape)
    return FrameMessage(run_uid="run-1", seq=seq, timestamp=12.5, data=data, metadata={"exposure_s": 0.01})


def _header(parts: list) -> dict:
    return msgpack.unpackb(parts[0], raw=False)


def _with_header(parts: list, **changes) -> list:
    header = {**_header(parts), **changes}
    return [msgpack.packb({k: v for k, v in header.items() if v is not _DELETE}), *parts[1:]]


_DELETE = object()


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("message", [START, END, HEARTBEAT], ids=["start", "end", "heartbeat"])
def test_round_trip_of_header_only_kinds(message):
    parts = encode(message)
    assert len(parts) == 1
    assert decode(parts, max_frame_bytes=MAX) == message


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
def test_frame_round_trip_for_every_allowed_dtype(dtype):
    message = _frame(dtype)
    parts = encode(message)
    assert len(parts) == 2 and _header(parts)["dtype"] == dtype
    decoded = decode(parts, max_frame_bytes=MAX)
    assert (decoded.run_uid, decoded.seq, decoded.timestamp, decoded.metadata) == (
        "run-1",
        7,
        12.5,
        {"exposure_s": 0.01},
    )
    assert decoded.data.dtype == np.dtype(dtype) and decoded.shape == (4, 6) and decoded.dtype == dtype
    np.testing.assert_array_equal(decoded.data, message.data)


@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray, zmq.Frame], ids=lambda w: w.__name__)
def test_decode_accepts_bytes_memoryview_and_zmq_frames(wrap):
    parts = [wrap(bytes(part)) for part in encode(_frame())]
    np.testing.assert_array_equal(decode(parts, max_frame_bytes=MAX).data, _frame().data)


def test_big_endian_and_strided_frames_go_out_little_endian_and_contiguous():
    data = np.arange(48, dtype=">u2").reshape(6, 8)[:, ::2]
    parts = encode(FrameMessage("r", 0, 0.0, data, {}))
    assert bytes(parts[1]) == np.ascontiguousarray(data, dtype="<u2").tobytes()
    np.testing.assert_array_equal(decode(parts, max_frame_bytes=MAX).data, data)


def test_payload_of_a_contiguous_frame_is_not_copied():
    data = np.zeros((256, 256), np.uint16)
    payload = encode(FrameMessage("r", 0, 0.0, data, {}))[1]
    assert np.shares_memory(np.frombuffer(payload, np.uint16), data)


def test_numpy_scalars_in_metadata_and_counters_are_sent_as_plain_numbers():
    message = FrameMessage("r", np.int64(3), np.float64(1.5), np.zeros((2, 2), np.uint8), {"gain": np.float32(2.0)})
    decoded = decode(encode(message), max_frame_bytes=MAX)
    assert decoded.seq == 3 and decoded.metadata == {"gain": 2.0}


# ---------------------------------------------------------------- the documented schema
def _documented_fields() -> dict[str, list[str]]:
    """Field names listed in the table under each ``### `kind` `` heading of docs/wire_format.md."""
    documented: dict[str, list[str]] = {}
    kind = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^###\s+`(\w+)`\s*$", line)
        if heading:
            kind = heading.group(1)
            documented[kind] = []
        elif line.startswith("#"):
            kind = None
        elif kind is not None:
            row = re.match(r"^\|\s*`(\w+)`\s*\|", line)
            if row:
                documented[kind].append(row.group(1))
    return documented


def test_schema_matches_docs():
    documented = _documented_fields()
    fix = (
        "update the field table under '### `{kind}`' in docs/wire_format.md to match "
        "stream/messages.py (and bump WIRE_VERSION there if the change is incompatible)"
    )
    assert set(documented) == set(MESSAGE_TYPES), (
        f"docs/wire_format.md documents kinds {sorted(documented)} but stream/messages.py defines "
        f"{sorted(MESSAGE_TYPES)}; add or remove a '### `kind`' section"
    )
    for kind in MESSAGE_TYPES:
        code = list(header_fields(kind))
        assert documented[kind] == code, (
            f"docs list {documented[kind]} for kind {kind!r}, the code has {code}: " + fix.format(kind=kind)
        )
    text = DOCS.read_text(encoding="utf-8")
    assert f"wire format, version {WIRE_VERSION}" in text, (
        f"docs/wire_format.md's title must say 'version {WIRE_VERSION}' (WIRE_VERSION in stream/messages.py)"
    )


def test_every_header_field_has_a_validator():
    for kind, cls in MESSAGE_TYPES.items():
        missing = set(header_fields(kind)) - set(wire._VALIDATORS)
        assert not missing, f"add a check for {cls.__name__}'s fields {sorted(missing)} to wire._VALIDATORS"
    assert [f.name for f in fields(FrameMessage)] == ["run_uid", "seq", "timestamp", "data", "metadata"]
    assert header_fields("frame") == ("run_uid", "seq", "timestamp", "shape", "dtype", "metadata")


# ---------------------------------------------------------------- rejections, one by one
def _rejects(parts, match: str, max_frame_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError, match=match) as info:
        decode(parts, max_frame_bytes=max_frame_bytes)
    return info.value


def test_other_wire_versions_are_rejected_naming_both():
    error = _rejects(_with_header(encode(START), v=1), "version 1")
    assert f"version {WIRE_VERSION}" in str(error)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"kind": "stop"}, "unknown kind"),
        ({"seq": _DELETE}, "'seq' is missing"),
        ({"seq": -1}, "'seq'.*>= 0"),
        ({"seq": 2**63}, "'seq'.*<= 9223372036854775807"),
        ({"seq": True}, "'seq'.*integer"),
        ({"seq": 1.0}, "'seq'.*integer"),
        ({"timestamp": "now"}, "'timestamp'"),
        ({"shape": [4, 6, 1]}, "'shape'"),
        ({"shape": [0, 6]}, "'shape'"),
        ({"shape": "4x6"}, "'shape'"),
        ({"dtype": ">u2"}, "'dtype'"),
        ({"dtype": "float16"}, "'dtype'"),
        ({"metadata": [1, 2]}, "'metadata'.*map"),
        ({"run_uid": ""}, "'run_uid'"),
        ({"shape": [4, 7]}, "seq 7: pixel part is 48 bytes.*needs 56"),
        ({"shape": [2**20, 2**20]}, "more than the"),
    ],
)
def test_bad_frame_headers_are_rejected_with_what_is_wrong(changes, match):
    error = _rejects(_with_header(encode(_frame()), **changes), match)
    if not {"seq", "kind"} & set(changes):
        assert error.seq == 7 and error.kind == "frame"


def test_part_counts_and_header_types_are_checked():
    frame = encode(_frame())
    _rejects(frame[:1], "has 1 parts; a frame message has 2")
    _rejects([*encode(START), b"extra"], "has 2 parts; a start message has 1")
    _rejects([], "has 0 parts")
    _rejects([*frame, b""], "has 3 parts")
    _rejects([msgpack.packb([1, 2])], "not a map")
    _rejects([b"\xc1"], "not valid msgpack")
    _rejects([msgpack.packb({"v": 1, "kind": "start"}) + b"\x00"], "not valid msgpack")
    _rejects(["a string"], "part 0 is not a byte buffer")


def test_msgpack_extension_types_and_bad_end_fields_are_rejected():
    ext = msgpack.packb({"v": 1, "kind": "heartbeat", "x": msgpack.ExtType(5, b"")})
    _rejects([ext], "extension type")
    stamp = msgpack.packb({"v": 1, "kind": "heartbeat", "x": msgpack.Timestamp(1, 0)})
    _rejects([stamp], "not valid msgpack")
    _rejects(_with_header(encode(END), reason="crashed"), "'reason'")
    _rejects(_with_header(encode(END), counters={"sent": "3"}), "counter 'sent' must be a number")
    _rejects(_with_header(encode(HEARTBEAT), last_seq=-2), "'last_seq'")


def test_frame_size_limit_is_checked_from_the_header():
    _rejects(encode(_frame(shape=(10, 10))), "200 bytes, more than the 199 allowed", max_frame_bytes=199)
    assert decode(encode(_frame(shape=(10, 10))), max_frame_bytes=200).shape == (10, 10)


def test_encode_refuses_what_decode_would_reject():
    with pytest.raises(ProtocolError, match="2-D"):
        encode(FrameMessage("r", 0, 0.0, np.zeros((2, 2, 2), np.uint16), {}))
    with pytest.raises(ProtocolError, match="float16"):
        encode(FrameMessage("r", 0, 0.0, np.zeros((2, 2), np.float16), {}))
    with pytest.raises(ProtocolError, match="cannot encode the header"):
        encode(FrameMessage("r", 0, 0.0, np.zeros((2, 2), np.uint8), {"path": Path("/tmp")}))
    with pytest.raises(ProtocolError, match="'reason'"):
        encode(EndMessage("r", 0, "done", "", {}, 0.0))
    with pytest.raises(ProtocolError, match="cannot encode a dict"):
        encode({"kind": "start"})


# ---------------------------------------------------------------- fuzzing
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["frame", "start", "end", "heartbeat", "uint16", "complete"]),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_valid = st.sampled_from([START, END, HEARTBEAT, _frame(), _frame("float64", (3, 5)), _frame("uint8", (1, 1), 0)])


def _decodes_or_protocol_error(parts) -> None:
    try:
        message = decode(parts, max_frame_bytes=4096)
    except ProtocolError:
        return
    assert isinstance(message, tuple(MESSAGE_TYPES.values()))
    if isinstance(message, FrameMessage):
        assert message.data.ndim == 2 and message.data.nbytes <= 4096


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_fuzz_random_parts(parts):
    _decodes_or_protocol_error(parts)


@FUZZ
@given(_valid, st.sampled_from(["v", "kind", *sorted(wire._VALIDATORS)]), st.one_of(st.just(_DELETE), _value))
def test_fuzz_one_header_field_replaced_or_removed(message, key, value):
    _decodes_or_protocol_error(_with_header(encode(message), **{key: value}))


@FUZZ
@given(_valid, st.data())
def test_fuzz_header_bytes_mutated(message, data):
    parts = encode(message)
    head = bytearray(parts[0])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(head) - 1))
        head[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(head)))
    _decodes_or_protocol_error([bytes(head[:cut] if data.draw(st.booleans()) else head), *parts[1:]])


@FUZZ
@given(
    st.lists(st.integers(-(2**40), 2**64 - 1), min_size=0, max_size=3),
    st.sampled_from([*ALLOWED_DTYPES, "bool", "object", "<f8", "S10"]),
    st.binary(max_size=256),
    st.integers(1, 4),
)
def test_fuzz_claimed_shapes_against_payloads(shape, dtype, payload, n_parts):
    header = {"v": 1, "kind": "frame", "run_uid": "r", "seq": 1, "timestamp": 0.0, "metadata": {}}
    header.update(shape=shape, dtype=dtype)
    _decodes_or_protocol_error([msgpack.packb(header), *[payload] * (n_parts - 1)])
