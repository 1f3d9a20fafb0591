"""Recording the raw frames of a live session beside its analysis (``--record``, ``[recording]``).

A live session is only worth running if its raw data can be analysed again:
every frame that arrives is handed to a
:class:`~plstream.acquire_adapters.files.recorder.FrameRecorder`, which copies
it into a bounded queue and writes it to an OME-TIFF in a thread of its own,
so the analysis never waits for the disk (a disk that cannot keep up costs
recorded frames, counted, never analysed ones). ``plstream replay`` of the
recording reproduces the live run: same seqs (gaps stay gaps), timestamps and
source description.

Where frames are recorded:

- ``run`` and ``analyze``: in the analysis process, as they arrive
  (:class:`RecordingSubscriber`);
- ``acquire``: at the source, before the network (:class:`RecordedSource`),
  so a slow or lost analyzer costs the recording nothing.

By default (``recording.enabled = "auto"``) real cameras are recorded, next to
the result file as ``<result>.raw.ome.tif``; files and the simulated camera
are not (their frames can be had again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plstream.acquire_adapters.base import Frame, FrameSource
from plstream.acquire_adapters.files.recorder import FrameRecorder
from plstream.config import Settings
from plstream.source_spec import CAMERA_KINDS
from plstream.stream.messages import FrameMessage, Message, StartMessage

__all__ = ["RecordedSource", "RecordingPlan", "RecordingSubscriber", "default_recording_path"]

logger = logging.getLogger(__name__)


def default_recording_path(result_path: str | Path) -> Path:
    """``<result>.raw.ome.tif`` beside the result file."""
    result = Path(result_path)
    return result.with_name(result.stem + ".raw.ome.tif")


@dataclass(frozen=True)
class RecordingPlan:
    """Whether and where to record, as the command line and the settings say.

    Attributes
    ----------
    enabled : bool or None
        True / False as asked; None ("auto"): record real cameras only.
    path : Path or None
        Where; None: next to the result file (or, at the source, next to the
        current folder's ``plstream-recordings/``).
    queue_bytes : int
        Memory for frames waiting for the disk.
    """

    enabled: bool | None
    path: Path | None
    queue_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings, *, record: str | None = None, no_record: bool = False) -> RecordingPlan:
        """``--record PATH`` / ``--no-record`` over ``[recording]``."""
        r = settings.recording
        if no_record:
            return cls(False, None, int(r.queue_mb * 2**20))
        path = Path(record) if record else (Path(r.path) if r.path else None)
        enabled = True if record else r.enabled
        return cls(enabled, path, int(r.queue_mb * 2**20))

    def wanted(self, source_kind: str) -> bool:
        """Record a source of this kind (``describe()["source"]``)?"""
        return self.enabled if self.enabled is not None else source_kind in CAMERA_KINDS

    def open(self, description: dict[str, Any], beside: Path) -> FrameRecorder:
        """A recorder for a source described by ``description``; the file goes to :attr:`path` or ``beside``."""
        path = self.path if self.path is not None else beside
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = FrameRecorder(path, description=description, queue_bytes=self.queue_bytes)
        logger.info("recording every frame to %s", path)
        return recorder


class RecordingSubscriber:
    """A frame subscriber that also hands every frame it receives to a recorder (opened at the run's start).

    Parameters
    ----------
    subscriber : FrameSubscriber
        Where the messages come from (it is used, not owned).
    plan : RecordingPlan
        Whether and where to record.
    result_path : path
        The result file; the recording goes beside it unless the plan says where.
    """

    def __init__(self, subscriber: Any, plan: RecordingPlan, result_path: str | Path) -> None:
        self._subscriber = subscriber
        self._plan = plan
        self._beside = default_recording_path(result_path)
        self.recorder: FrameRecorder | None = None
        self._run_uid: str | None = None

    @property
    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self._subscriber.counters
        return counters

    def receive(self, timeout_s: float) -> Message | None:
        message = self._subscriber.receive(timeout_s)
        if isinstance(message, StartMessage) and self._run_uid is None:
            self._run_uid = message.run_uid
            if self._plan.wanted(str(message.source.get("source", ""))):
                self.recorder = self._plan.open(dict(message.source), self._beside)
        elif isinstance(message, FrameMessage) and self.recorder is not None and message.run_uid == self._run_uid:
            self.recorder.record(message.seq, message.timestamp, message.data, dict(message.metadata))
        return message

    def send_ready(self, run_uid: str) -> bool:
        return bool(self._subscriber.send_ready(run_uid))

    def send_heartbeat(self, run_uid: str, frames_received: int) -> bool:
        return bool(self._subscriber.send_heartbeat(run_uid, frames_received))

    def send_done(self, run_uid: str, frames_received: int) -> bool:
        return bool(self._subscriber.send_done(run_uid, frames_received))

    def close(self) -> dict[str, Any] | None:
        """Finish the recording (its counters), or None when nothing was recorded."""
        return _close(self.recorder)


class RecordedSource:
    """A frame source whose frames are also recorded as they are taken from it (``acquire --record``).

    The recorder is opened here, from the source's description, so its file
    exists (or the error is known) before the first frame.
    """

    def __init__(self, source: FrameSource, plan: RecordingPlan, beside: Path) -> None:
        self._source = source
        self.recorder = plan.open(source.describe(), beside)

    def describe(self) -> dict[str, Any]:
        return self._source.describe()

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._source:
            self.recorder.record(frame.seq, frame.timestamp, frame.data, dict(frame.metadata))
            yield frame

    def stop(self) -> None:
        self._source.stop()

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            _close(self.recorder)


def _close(recorder: FrameRecorder | None) -> dict[str, Any] | None:
    if recorder is None:
        return None
    counters = recorder.close()
    lost = int(counters.get("dropped_queue_full", 0)) + int(counters.get("dropped_write_error", 0))
    if counters.get("write_error"):
        logger.error("the recording %s stopped: %s", counters.get("path"), counters["write_error"])
    elif lost:
        logger.warning("%d frames could not be recorded in %s (the disk did not keep up)", lost, counters.get("path"))
    else:
        logger.info("recorded %d frames in %s", counters.get("frames_recorded", 0), counters.get("path"))
    return counters
