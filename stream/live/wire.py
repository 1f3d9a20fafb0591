"""Pure encoding and decoding of the live result protocol (no sockets).

A request is one part, a msgpack map ``{"v": LIVE_VERSION, "kind": "request", <fields>}``.
An update is a msgpack map header ``{"v", "kind": "update", <scalar fields>, "arrays":
[[name, dtype, shape], ...]}`` followed by one raw little-endian C-order buffer per
listed array. On the socket both travel behind a request-id part (the *envelope*,
see :data:`MAX_REQUEST_ID_BYTES`) that the server echoes; this module does not
see it. ``docs/wire_format.md``, section "Live result protocol", is the contract.

The decoders trust nothing: every part count, type, size, dtype and shape is
checked, and the only exception they raise is :class:`LiveProtocolError`. The
encoders run the same checks, so they refuse what a decoder would reject.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from plstream.stream._checks import Invalid, byte_view, is_int, pack, type_name, unpack
from plstream.stream.live._checks import INFO_CHECKS, STATUS_CHECKS, integer, known_keys, string
from plstream.stream.live.messages import LIVE_VERSION, LiveRequest, LiveUpdate
from plstream.stream.messages import ALLOWED_DTYPES

__all__ = [
    "ARRAY_DIMS",
    "ARRAY_DTYPES",
    "MAX_FRAMES_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_ID_BYTES",
    "MAX_UPDATE_HEADER_BYTES",
    "OPTIONAL_ARRAYS",
    "REQUEST_FIELDS",
    "UPDATE_FIELDS",
    "LiveProtocolError",
    "decode_request",
    "decode_update",
    "encode_request",
    "encode_update",
]

MAX_REQUEST_BYTES = 65536
"""Largest request header accepted, bytes (real ones are under 200)."""
MAX_UPDATE_HEADER_BYTES = 1 << 20
"""Largest update header accepted (1 MiB); ``info`` and ``status`` are small."""
MAX_REQUEST_ID_BYTES = 64
"""Largest request-id envelope part the server echoes (the plstream client sends 8 bytes)."""
MAX_FRAMES_PER_REQUEST = 1_000_000
"""Upper bound of a request's ``max_frames``."""

REQUEST_FIELDS: tuple[str, ...] = ("session_id", "since_frame", "image_version", "mean_version", "max_frames")
"""Request header fields besides ``v`` and ``kind`` (the :class:`LiveRequest` fields, in order)."""

_ARRAYS: dict[str, tuple[tuple[str, ...], tuple[str | int, ...]]] = {
    "seq": (("int64",), ("n",)),
    "timestamp": (("float64",), ("n",)),
    "drift_xy": (("float64",), ("n", 2)),
    "intensity": (("float32",), ("n", "S")),
    "state": (("int8",), ("n", "S")),
    "spots_x": (("float64",), ("S",)),
    "spots_y": (("float64",), ("S",)),
    "spots_first_frame": (("int64",), ("S",)),
    "image": (ALLOWED_DTYPES, ("rows", "cols")),
    "mean_image": (("float32",), ("mean_rows", "mean_cols")),
}
ARRAY_DTYPES: dict[str, tuple[str, ...]] = {name: dtypes for name, (dtypes, _) in _ARRAYS.items()}
"""Allowed dtypes (numpy names, little-endian on the wire) of each array, in wire order."""
ARRAY_DIMS: dict[str, tuple[str | int, ...]] = {name: dims for name, (_, dims) in _ARRAYS.items()}
"""Shape of each array: a name is a size shared by every array that uses it, an int is fixed."""

OPTIONAL_ARRAYS: tuple[str, ...] = ("image", "mean_image")
"""Arrays sent only when not ``None``; their dimensions are > 0."""

UPDATE_FIELDS: tuple[str, ...] = (
    "session_id",
    "first_frame",
    "n_frames_total",
    "image_frame",
    "image_version",
    "mean_version",
    "info",
    "status",
    "arrays",
)
"""Update header fields besides ``v`` and ``kind``; ``arrays`` describes the buffer parts."""

_MAX_SESSION_CHARS = 256
_MAX_DIM = 1 << 40


class LiveProtocolError(ValueError):
    """A live request or update that does not follow the live result protocol.

    Attributes
    ----------
    problem : str
        What is wrong, in words.
    kind : str or None
        ``"request"`` or ``"update"``, when known.
    """

    def __init__(self, problem: str, *, kind: str | None = None) -> None:
        self.problem = problem
        self.kind = kind
        super().__init__(f"live {kind or 'message'}: {problem}")


_REQUEST_CHECKS: dict[str, Callable[[Any], Any]] = {
    "session_id": string(_MAX_SESSION_CHARS),
    "since_frame": integer(0),
    "image_version": integer(-1),
    "mean_version": integer(-1),
    "max_frames": integer(1, MAX_FRAMES_PER_REQUEST),
}


def _array_specs(value: Any) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """Check the ``arrays`` list: known unique names, allowed dtypes, consistent shapes."""
    if not isinstance(value, list):
        raise Invalid(f"expected a list of [name, dtype, shape], got {type_name(value)}")
    specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 3:
            raise Invalid(f"each entry must be [name, dtype, shape], got {entry!r:.80}")
        name, dtype, shape = entry
        if not isinstance(name, str) or name not in ARRAY_DTYPES:
            raise Invalid(f"unknown array {name!r:.40}; expected names from {', '.join(ARRAY_DTYPES)}")
        if name in specs:
            raise Invalid(f"array {name!r} is listed twice")
        if not isinstance(dtype, str) or dtype not in ARRAY_DTYPES[name]:
            raise Invalid(f"array {name!r} has dtype {dtype!r:.40}; allowed: {', '.join(ARRAY_DTYPES[name])}")
        dims = ARRAY_DIMS[name]
        if not isinstance(shape, list) or len(shape) != len(dims):
            raise Invalid(f"array {name!r} must have a shape of {len(dims)} integers, got {shape!r:.80}")
        if not all(is_int(d) and 0 <= d <= _MAX_DIM for d in shape):
            raise Invalid(f"array {name!r} has shape {shape!r:.80}; expected integers in [0, {_MAX_DIM}]")
        specs[name] = (np.dtype(dtype).newbyteorder("<"), tuple(int(d) for d in shape))
    missing = [name for name in ARRAY_DTYPES if name not in specs and name not in OPTIONAL_ARRAYS]
    if missing:
        raise Invalid(f"arrays {', '.join(missing)} are missing")
    sizes: dict[str, tuple[int, str]] = {}
    for name in ARRAY_DTYPES:  # fixed order, so the messages are reproducible
        if name not in specs:
            continue
        for axis, (dim, size) in enumerate(zip(ARRAY_DIMS[name], specs[name][1])):
            if isinstance(dim, int):
                if size != dim:
                    raise Invalid(f"array {name!r} has {size} on axis {axis}, must have {dim}")
            elif dim in sizes and sizes[dim][0] != size:
                other_size, other = sizes[dim]
                raise Invalid(f"array {name!r} has {dim}={size} (axis {axis}) but {other!r} has {dim}={other_size}")
            else:
                sizes.setdefault(dim, (size, name))
            if name in OPTIONAL_ARRAYS and size == 0:
                raise Invalid(f"array {name!r} has shape {list(specs[name][1])}; an image has rows and cols > 0")
    return [(name, *specs[name]) for name in ARRAY_DTYPES if name in specs]


_UPDATE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "session_id": string(_MAX_SESSION_CHARS, min_chars=1),
    "first_frame": integer(0),
    "n_frames_total": integer(0),
    "image_frame": integer(-1),
    "image_version": integer(-1),
    "mean_version": integer(-1),
    "info": known_keys(INFO_CHECKS, ()),
    "status": known_keys(STATUS_CHECKS, ("state",)),
    "arrays": _array_specs,  # checked last: comes back as [(name, dtype, shape), ...]
}


def _check_fields(header: dict[str, Any], checks: dict[str, Callable[[Any], Any]], kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, check in checks.items():
        if name not in header:
            raise LiveProtocolError(f"required field {name!r} is missing", kind=kind)
        try:
            values[name] = check(header[name])
        except Invalid as exc:
            raise LiveProtocolError(f"field {name!r}: {exc}", kind=kind) from None
    return values


def _check_update(header: dict[str, Any]) -> dict[str, Any]:
    """Validate an update header; ``arrays`` comes back as ``[(name, dtype, shape), ...]``."""
    values = _check_fields(header, _UPDATE_CHECKS, "update")
    shapes = {name: shape for name, _, shape in values["arrays"]}
    n = shapes["seq"][0]
    if n and values["first_frame"] + n > values["n_frames_total"]:
        raise LiveProtocolError(
            f"rows {values['first_frame']}..{values['first_frame'] + n - 1} go past "
            f"n_frames_total={values['n_frames_total']}",
            kind="update",
        )
    for image, version in (("image", "image_version"), ("mean_image", "mean_version")):
        if image in shapes and values[version] < 0:
            raise LiveProtocolError(
                f"carries {image!r} but {version} is {values[version]}; must be >= 0", kind="update"
            )
    return values


# ---------------------------------------------------------------- msgpack
def _pack(header: dict[str, Any], kind: str) -> bytes:
    try:
        return pack(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LiveProtocolError(f"cannot encode the header: {exc}", kind=kind) from None


def _byte_view(part: Any, index: int, kind: str) -> memoryview:
    try:
        return byte_view(part, index)
    except Invalid as exc:
        raise LiveProtocolError(str(exc), kind=kind) from None


def _n_parts(parts: Sequence[Any], kind: str) -> int:
    try:
        return len(parts)
    except TypeError:
        raise LiveProtocolError(f"expected a sequence of message parts, got {type_name(parts)}", kind=kind) from None


def _unpack(part: Any, kind: str, max_bytes: int) -> dict[str, Any]:
    """Unpack and check a header part: a msgpack map of version ``LIVE_VERSION`` and this ``kind``."""
    head = _byte_view(part, 0, kind)
    if head.nbytes > max_bytes:
        raise LiveProtocolError(f"header is {head.nbytes} bytes, more than the {max_bytes} allowed", kind=kind)
    try:
        header = unpack(head)
    except (ValueError, TypeError, RecursionError) as exc:
        raise LiveProtocolError(f"header is not valid msgpack ({type(exc).__name__}: {exc})", kind=kind) from None
    if not isinstance(header, dict):
        raise LiveProtocolError(f"header is a msgpack {type_name(header)}, not a map", kind=kind)
    version = header.get("v")
    if isinstance(version, bool) or version != LIVE_VERSION:
        raise LiveProtocolError(
            f"live protocol version {version!r:.40} but this plstream speaks version {LIVE_VERSION} only; "
            "run the same plstream version in the analyzer and the viewer",
            kind=kind,
        )
    if header.get("kind") != kind:
        raise LiveProtocolError(f"kind is {header.get('kind')!r:.40}, expected {kind!r}", kind=kind)
    return header


# ---------------------------------------------------------------- requests
def encode_request(req: LiveRequest) -> list[bytes]:
    """Encode a viewer's request into message parts (one part: the header).

    Raises
    ------
    LiveProtocolError
        If ``req`` is not a :class:`LiveRequest` or a field is out of range
        (e.g. ``max_frames`` outside 1 .. :data:`MAX_FRAMES_PER_REQUEST`).
    """
    if not isinstance(req, LiveRequest):
        raise LiveProtocolError(f"cannot encode a {type(req).__name__}; expected a LiveRequest", kind="request")
    header = {"v": LIVE_VERSION, "kind": "request", **{name: getattr(req, name) for name in REQUEST_FIELDS}}
    encoded = _pack(header, "request")
    decode_request([encoded])  # the same checks as the receiving end
    return [encoded]


def decode_request(parts: Sequence[Any]) -> LiveRequest:
    """Decode and validate a request (the parts after the request-id envelope).

    Raises
    ------
    LiveProtocolError
        For anything that does not follow the protocol; the message says what.
    """
    n_parts = _n_parts(parts, "request")
    if n_parts != 1:
        raise LiveProtocolError(f"has {n_parts} parts; a request has 1 (the header)", kind="request")
    header = _unpack(parts[0], "request", MAX_REQUEST_BYTES)
    return LiveRequest(**_check_fields(header, _REQUEST_CHECKS, "request"))


# ---------------------------------------------------------------- updates
def _wire_array(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.name not in ARRAY_DTYPES[name]:
        allowed = ", ".join(ARRAY_DTYPES[name])
        raise LiveProtocolError(
            f"array {name!r} is {array.dtype}; it must be {allowed} (convert it with .astype)", kind="update"
        )
    wire_dtype = array.dtype.newbyteorder("<")
    if array.dtype != wire_dtype or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=wire_dtype)
    return array


def encode_update(upd: LiveUpdate) -> list[Any]:
    """Encode an analyzer's update into the parts of one multipart message.

    Parameters
    ----------
    upd : LiveUpdate

    Returns
    -------
    list
        ``[header_bytes, buffer, ...]``: one buffer per array in the header's
        ``arrays`` list (``image`` and ``mean_image`` only when not ``None``),
        each a byte memoryview on the array when it is already C-contiguous
        little-endian (no copy; do not modify the arrays until sent), or
        ``b""`` for an empty array.

    Raises
    ------
    LiveProtocolError
        If ``upd`` is not a :class:`LiveUpdate`, an array has the wrong dtype
        or an inconsistent shape, or a field is out of range or not msgpack-able.
    """
    if not isinstance(upd, LiveUpdate):
        raise LiveProtocolError(f"cannot encode a {type(upd).__name__}; expected a LiveUpdate", kind="update")
    header: dict[str, Any] = {"v": LIVE_VERSION, "kind": "update"}
    header.update((name, getattr(upd, name)) for name in UPDATE_FIELDS if name != "arrays")
    arrays = []
    payloads: list[Any] = []
    for name in ARRAY_DTYPES:
        value = getattr(upd, name)
        if value is None and name in OPTIONAL_ARRAYS:
            continue
        array = _wire_array(name, value)
        arrays.append([name, array.dtype.name, list(array.shape)])
        # ndarray.data is memoryview(array); numpy's stubs declare ndarray a Buffer only for Python >= 3.12
        payloads.append(array.data.cast("B") if array.size else b"")
    header["arrays"] = arrays
    encoded = _pack(header, "update")
    if len(encoded) > MAX_UPDATE_HEADER_BYTES:
        raise LiveProtocolError(
            f"header is {len(encoded)} bytes, more than {MAX_UPDATE_HEADER_BYTES}; keep info and status small",
            kind="update",
        )
    _check_update(_unpack(encoded, "update", MAX_UPDATE_HEADER_BYTES))  # the same checks as the receiving end
    return [encoded, *payloads]


def decode_update(parts: Sequence[Any], *, max_bytes: int) -> LiveUpdate:
    """Decode and validate an update (the parts after the request-id envelope).

    Parameters
    ----------
    parts : sequence of bytes, memoryview or zmq.Frame
        The message parts as received.
    max_bytes : int
        Largest total size of the array buffers accepted, bytes; checked from
        the header's shapes and dtypes before any buffer is touched.

    Returns
    -------
    LiveUpdate
        Its arrays are ``np.frombuffer(part).reshape(shape)``: read-only views
        on the received buffers (which they keep alive). Copy what you keep.

    Raises
    ------
    LiveProtocolError
        For anything that does not follow the protocol; the message says what.
    """
    n_parts = _n_parts(parts, "update")
    if n_parts < 1:
        raise LiveProtocolError("has no parts; an update has a header and one part per array", kind="update")
    values = _check_update(_unpack(parts[0], "update", MAX_UPDATE_HEADER_BYTES))
    specs = values.pop("arrays")
    if n_parts != 1 + len(specs):
        raise LiveProtocolError(
            f"has {n_parts} parts; its header lists {len(specs)} arrays, so it needs {1 + len(specs)}", kind="update"
        )
    sizes = [math.prod(shape) * dtype.itemsize for _, dtype, shape in specs]
    if sum(sizes) > max_bytes:
        raise LiveProtocolError(
            f"arrays total {sum(sizes)} bytes, more than the {max_bytes} allowed (max_bytes); "
            "ask for fewer rows with a smaller max_frames",
            kind="update",
        )
    arrays: dict[str, Any] = {}  # LiveUpdate's array fields, named at run time like ``values``
    for index, ((name, dtype, shape), size) in enumerate(zip(specs, sizes), start=1):
        buffer = _byte_view(parts[index], index, "update")
        if buffer.nbytes != size:
            raise LiveProtocolError(
                f"part {index} ({name!r}) is {buffer.nbytes} bytes but shape {list(shape)} of {dtype.name} "
                f"needs {size}",
                kind="update",
            )
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        array.flags.writeable = False  # the same for every kind of received buffer
        arrays[name] = array
    return LiveUpdate(**values, **arrays)
