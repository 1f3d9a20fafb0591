"""The plstream recording format (``recording_version`` 1): what a recording keeps beside its pixels, and where.

Written by :mod:`~plstream.acquire_adapters.files.recorder`, read by
:mod:`~plstream.acquire_adapters.files.tiff_stack`; the public description is
``docs/recording_format.md``. In short: page 0's ImageDescription holds, while
recording, one marker line and a JSON header (the file is then a plain TIFF
stack); at close it is replaced by OME-XML whose MapAnnotation
``plstream_recording`` holds the same JSON completed with the per-frame facts.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import tifffile

from plstream.acquire_adapters.base import CorruptInputError, InputError

__all__ = [
    "RECORDING_KEY",
    "RECORDING_VERSION",
    "UNFINALIZED_MARKER",
    "Recording",
    "SeqRuns",
    "dumps",
    "final_description",
    "frame_interval_s",
    "frame_rate_hz",
    "header",
    "parse_recording",
    "placeholder_description",
    "writer_name",
]

#: Version of the recording format; readers refuse newer versions.
RECORDING_VERSION = 1
#: Key of the JSON object (the MapAnnotation entry's key and the JSON's top-level key).
RECORDING_KEY = "plstream_recording"
#: First line of page 0's ImageDescription until the recording is finalized.
UNFINALIZED_MARKER = "plstream_recording: not finalized"
_NAMESPACE = "plstream.recording"
_OME_TYPES = {"uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"}


def writer_name() -> str:
    """``plstream <version>`` of the installed package."""
    try:
        return f"plstream {version('plstream')}"
    except PackageNotFoundError:  # a source tree that is not installed
        return "plstream"


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays as numbers and lists, anything else as its ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


def dumps(value: Any) -> str:
    """Compact, ASCII JSON (NaN and infinities as Python's json writes them)."""
    return json.dumps(value, default=jsonable, ensure_ascii=True, separators=(",", ":"))


def header(description: dict[str, Any], shape: tuple[int, int], dtype: np.dtype) -> dict[str, Any]:
    """The JSON facts known when a recording starts (``finalized`` false)."""
    if np.dtype(dtype).name not in _OME_TYPES:
        raise ValueError(f"cannot record {np.dtype(dtype).name} frames: OME-TIFF holds {', '.join(sorted(_OME_TYPES))}")
    return {
        "recording_version": RECORDING_VERSION,
        "finalized": False,
        "writer": writer_name(),
        "shape": [int(shape[0]), int(shape[1])],
        "dtype": np.dtype(dtype).name,
        "source": json.loads(dumps(description)),
    }


def placeholder_description(facts: dict[str, Any]) -> str:
    """Page 0's ImageDescription while recording: the marker line, then ``{"plstream_recording": facts}``."""
    return f"{UNFINALIZED_MARKER} (recording, or the recording process ended before close())\n" + dumps(
        {RECORDING_KEY: facts}
    )


class SeqRuns:
    """Frame numbers in file order as runs ``[[first, last], ...]`` of consecutive numbers."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def append(self, seq: int) -> None:
        """Add the next recorded frame's seq."""
        if self.runs and seq == self.runs[-1][1] + 1:
            self.runs[-1][1] = seq
        else:
            self.runs.append([seq, seq])

    @staticmethod
    def expand(runs: Sequence[Sequence[int]]) -> np.ndarray:
        """int64 array of every seq the runs hold, in order."""
        if not runs:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(first, last + 1, dtype=np.int64) for first, last in runs])


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def frame_interval_s(source: dict[str, Any]) -> float | None:
    """Seconds between frames stated by a source description (``frame_interval_s``, else 1 / ``frame_rate_hz``)."""
    interval = _positive(source.get("frame_interval_s"))
    if interval is None and (rate := _positive(source.get("frame_rate_hz"))) is not None:
        interval = 1.0 / rate
    return interval


def frame_rate_hz(source: dict[str, Any]) -> float | None:
    """Frames per second stated by a source description (``frame_rate_hz``, else 1 / ``frame_interval_s``)."""
    rate = _positive(source.get("frame_rate_hz"))
    if rate is None and (interval := _positive(source.get("frame_interval_s"))) is not None:
        rate = 1.0 / interval
    return rate


def final_description(
    facts: dict[str, Any], name: str, timestamps: Sequence[float], frame_metadata_json: Sequence[str]
) -> str:
    """OME-XML for page 0 of a finished recording of ``len(timestamps)`` frames.

    ``facts`` is the header completed with ``finalized``, ``n_frames``,
    ``seq_runs`` and ``not_recorded``; the per-frame lists are added here
    (``frame_metadata_json``: each frame's metadata already as JSON).
    """
    n = len(timestamps)
    rows, cols = facts["shape"]
    # the big per-frame lists are joined as text, not re-encoded
    per_frame = f',"timestamps_s":{dumps(list(timestamps))},"frame_metadata":[{",".join(frame_metadata_json)}]' + "}}"
    document = dumps({RECORDING_KEY: facts})[:-2] + per_frame
    source = facts["source"]
    image: dict[str, Any] = {
        "Name": name,
        "Description": f"raw frames recorded by {facts['writer']} from {source.get('source', 'a frame source')}",
        "MapAnnotation": {"Namespace": _NAMESPACE, "Value": {RECORDING_KEY: document}},
    }
    if (pixel_um := _positive(source.get("pixel_size_um"))) is not None:
        image.update(PhysicalSizeX=pixel_um, PhysicalSizeY=pixel_um)  # the schema's default unit is µm
    if (interval := frame_interval_s(source)) is not None:
        image.update(TimeIncrement=interval, TimeIncrementUnit="s")
    ome = tifffile.OmeXml(Creator=facts["writer"])
    ome.addimage(facts["dtype"], (n, rows, cols), (n, 1, 1, rows, cols, 1), axes="TYX", **image)
    xml = ome.tostring(declaration=True)
    # One Plane per frame (after TiffData, as the schema orders them), written here: tifffile's
    # Plane writer takes ~40 µs a plane (an unravel_index each), 40 s at the close of 1M frames.
    # DeltaT is in the schema's default unit, s.
    first = float(timestamps[0]) if n else 0.0
    planes = "".join(
        f'<Plane TheC="0" TheZ="0" TheT="{t}" DeltaT="{float(s) - first!r}"/>' for t, s in enumerate(timestamps)
    )
    head, pixels_end, tail = xml.partition("</Pixels>")
    return (head + planes + pixels_end + tail).encode("ascii", "xmlcharrefreplace").decode("ascii")


@dataclass(frozen=True, eq=False)
class Recording:
    """What a plstream recording says of itself (see ``docs/recording_format.md``).

    ``seqs``, ``timestamps`` and ``frame_metadata`` are None when the recording
    was not finalized (they were lost).
    """

    finalized: bool
    facts: dict[str, Any]
    source: dict[str, Any]
    n_frames: int | None
    seqs: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    frame_metadata: list[dict[str, Any]] | None = field(default=None, repr=False)


def _map_annotation_value(path: str, xml: str) -> str | None:
    """The text of the ``plstream_recording`` MapAnnotation entry of OME-XML, None when it has none."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise CorruptInputError(path, f"its OME-XML cannot be parsed ({exc})") from exc
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "M" and element.get("K") == RECORDING_KEY:
            return element.text or ""
    return None


def _check(path: str, ok: bool, problem: str) -> None:
    if not ok:
        raise CorruptInputError(path, f"its {RECORDING_KEY} metadata is inconsistent: {problem}")


def parse_recording(path: str, description: str | None) -> Recording | None:
    """The recording facts in page 0's ImageDescription, None when the file is not a plstream recording.

    Raises
    ------
    InputError
        A recording of a newer ``recording_version`` than this plstream reads.
    CorruptInputError
        Recording metadata that cannot be parsed or contradicts itself.
    """
    if not description:
        return None
    if description.startswith(UNFINALIZED_MARKER):
        text = description.partition("\n")[2]
    elif RECORDING_KEY in description and description.rstrip().endswith("OME>"):
        found = _map_annotation_value(path, description)
        if found is None:
            return None
        text = found
    else:
        return None
    try:
        document = json.loads(text)
        facts = document[RECORDING_KEY]
        recording_version = facts["recording_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptInputError(path, f"its {RECORDING_KEY} metadata cannot be read ({exc!r})") from exc
    if not isinstance(recording_version, int) or recording_version > RECORDING_VERSION:
        raise InputError(
            path,
            f"is a plstream recording of recording_version {recording_version!r}; this plstream reads "
            f"version {RECORDING_VERSION} and older: update plstream",
        )
    source = facts.get("source")
    _check(path, isinstance(source, dict), "'source' is not an object")
    if not facts.get("finalized"):
        return Recording(finalized=False, facts=facts, source=source, n_frames=None)
    n = facts.get("n_frames")
    runs, timestamps, metadata = facts.get("seq_runs"), facts.get("timestamps_s"), facts.get("frame_metadata")
    _check(path, isinstance(n, int) and n >= 0, f"n_frames is {n!r}")
    try:
        seqs = SeqRuns.expand(runs)
        stamps = np.asarray(timestamps, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CorruptInputError(path, f"its {RECORDING_KEY} seq_runs or timestamps_s cannot be read ({exc})") from exc
    _check(path, seqs.shape == (n,), f"seq_runs hold {seqs.size} frames, n_frames is {n}")
    _check(path, stamps.shape == (n,), f"{stamps.size} timestamps_s for {n} frames")
    _check(
        path,
        isinstance(metadata, list) and len(metadata) == n and all(isinstance(m, dict) for m in metadata),
        f"frame_metadata is not a list of {n} objects",
    )
    return Recording(
        finalized=True, facts=facts, source=source, n_frames=n, seqs=seqs, timestamps=stamps, frame_metadata=metadata
    )
