"""Which frames of a run arrived, which are missing, and which to refuse: :class:`SequenceTracker`.

Every frame carries its run's ``run_uid`` and a ``seq`` (0, 1, 2, ... as the
source produced them). The tracker is the one place that answers "which
frames are missing": it is pure (no sockets, no clock), so it is tested on
its own and used by whoever consumes a stream (the analysis session, a
viewer).

Rules, per frame of the tracked run:

- the next ``seq``, or one further ahead: **new** (a jump records the frames
  in between as a gap);
- a ``seq`` inside a recorded gap: **late**; it is taken and the gap shrinks
  (or splits);
- a ``seq`` already seen: **duplicate**, to be dropped;
- a ``seq`` more than ``max_ahead`` beyond the frames seen so far:
  **implausible**, to be dropped (a forged or corrupted number must not
  declare billions of frames missing).

The producer also says how far it got (heartbeats: ``last_seq``; the end
message: ``n_frames``); frames below that which never arrived are gaps too.
"""

from __future__ import annotations

import bisect
import enum
import logging

from plstream.stream.messages import EndMessage, FrameMessage, HeartbeatMessage, Message, StartMessage

__all__ = ["FrameVerdict", "SequenceTracker", "describe_losses"]

_GAPS_NAMED = 3  # a loss sentence names at most this many gaps

logger = logging.getLogger(__name__)


class FrameVerdict(enum.Enum):
    """What to do with one frame (see the module docstring)."""

    NEW = "new"
    LATE = "late"
    DUPLICATE = "duplicate"
    IMPLAUSIBLE = "implausible"
    OTHER_RUN = "other_run"

    @property
    def accepted(self) -> bool:
        """True for frames to analyze (new or late)."""
        return self in (FrameVerdict.NEW, FrameVerdict.LATE)


class SequenceTracker:
    """Run, sequence and gap bookkeeping of one stream.

    Parameters
    ----------
    max_ahead : int, optional
        Largest jump accepted beyond the next expected ``seq`` (frames); a
        frame further ahead is refused as implausible. ``None``: no limit.

    Attributes
    ----------
    run_uid : str or None
        The run tracked (the first one started or seen).
    counters : dict of str to int
        ``frames`` (accepted), ``late`` (accepted inside a gap), ``duplicates``,
        ``implausible``, ``other_run`` (frames of another run, ignored).

    Examples
    --------
    >>> tracker = SequenceTracker()
    >>> tracker.start("run-a")
    True
    >>> [tracker.frame("run-a", seq).value for seq in (0, 1, 4, 2, 2)]
    ['new', 'new', 'new', 'late', 'duplicate']
    >>> tracker.gaps, tracker.frames_missing
    ([(3, 3)], 1)
    """

    def __init__(self, *, max_ahead: int | None = None) -> None:
        if max_ahead is not None and max_ahead < 0:
            raise ValueError(f"max_ahead must be >= 0 frames or None, got {max_ahead}")
        self._max_ahead = max_ahead
        self.run_uid: str | None = None
        self._next = 0  # one past the highest seq known to exist (received or announced)
        self._gap_first: list[int] = []  # sorted, disjoint missing ranges
        self._gap_last: list[int] = []
        self._missing = 0
        self.gaps_version = 0
        """Incremented whenever :attr:`gaps` changes (a cheap "anything new?" for writers)."""
        self.counters: dict[str, int] = dict.fromkeys(("frames", "late", "duplicates", "implausible", "other_run"), 0)

    # ------------------------------------------------------------------ reading
    @property
    def gaps(self) -> list[tuple[int, int]]:
        """The missing ``(first_seq, last_seq)`` ranges now, in order."""
        return list(zip(self._gap_first, self._gap_last))

    @property
    def frames_missing(self) -> int:
        """How many frames below :attr:`next_seq` never arrived."""
        return self._missing

    @property
    def next_seq(self) -> int:
        """One past the highest ``seq`` known to exist (received or announced by the producer)."""
        return self._next

    def continue_from(self, next_seq: int, gaps: list[tuple[int, int]]) -> None:
        """Count frames ``0 .. next_seq-1`` as seen except ``gaps`` (a resumed analysis); before any message."""
        if self.run_uid is not None or self._next:
            raise RuntimeError("continue_from() must come before the first message")
        self._next = int(next_seq)
        for first, last in gaps:
            self._add_gap(int(first), int(last))

    # ------------------------------------------------------------------ events
    def observe(self, message: Message) -> FrameVerdict | None:
        """Account for any stream message; returns the verdict for a frame, else None."""
        if isinstance(message, FrameMessage):
            return self.frame(message.run_uid, message.seq)
        if isinstance(message, StartMessage):
            self.start(message.run_uid)
        elif isinstance(message, HeartbeatMessage):
            self.producer_reached(message.run_uid, message.last_seq + 1)
        elif isinstance(message, EndMessage) and message.n_frames is not None:
            self.producer_reached(message.run_uid, message.n_frames)
        return None

    def start(self, run_uid: str) -> bool:
        """A run's start message; returns True when it is (or becomes) the run tracked."""
        if self.run_uid is None:
            self.run_uid = run_uid
            return True
        return run_uid == self.run_uid

    def frame(self, run_uid: str, seq: int) -> FrameVerdict:
        """Account for one frame and say what to do with it.

        A frame arriving before any start message adopts its run; the frames
        before it (from 0) are recorded missing.
        """
        if self.run_uid is None:
            self.run_uid = run_uid
        elif run_uid != self.run_uid:
            self.counters["other_run"] += 1
            return FrameVerdict.OTHER_RUN
        if seq >= self._next:
            if self._max_ahead is not None and seq - self._next > self._max_ahead:
                self.counters["implausible"] += 1
                return FrameVerdict.IMPLAUSIBLE
            if seq > self._next:
                self._add_gap(self._next, seq - 1)
            self._next = seq + 1
            self.counters["frames"] += 1
            return FrameVerdict.NEW
        if self._fill(seq):
            self.counters["frames"] += 1
            self.counters["late"] += 1
            return FrameVerdict.LATE
        self.counters["duplicates"] += 1
        return FrameVerdict.DUPLICATE

    def producer_reached(self, run_uid: str, n_frames: int) -> None:
        """The producer says frames ``0 .. n_frames-1`` exist (heartbeat or end); record those not seen as missing.

        A count more than ``max_ahead`` beyond what was seen is ignored (and
        counted as implausible), as a frame would be.
        """
        if run_uid != self.run_uid or n_frames <= self._next:
            return
        if self._max_ahead is not None and n_frames - self._next > self._max_ahead + 1:
            self.counters["implausible"] += 1
            return
        self._add_gap(self._next, n_frames - 1)
        self._next = n_frames

    # ------------------------------------------------------------------ helpers
    def _add_gap(self, first: int, last: int) -> None:
        self._gap_first.append(first)
        self._gap_last.append(last)
        self._missing += last - first + 1
        self.gaps_version += 1

    def _fill(self, seq: int) -> bool:
        """Take ``seq`` out of the gap that holds it; False when no gap holds it (a duplicate)."""
        i = bisect.bisect_right(self._gap_first, seq) - 1
        if i < 0 or seq > self._gap_last[i]:
            return False
        first, last = self._gap_first[i], self._gap_last[i]
        del self._gap_first[i], self._gap_last[i]
        if seq < last:
            self._gap_first.insert(i, seq + 1)
            self._gap_last.insert(i, last)
        if first < seq:
            self._gap_first.insert(i, first)
            self._gap_last.insert(i, seq - 1)
        self._missing -= 1
        self.gaps_version += 1
        return True


def describe_losses(
    frames_missing: int, n_gaps: int, gaps: list[tuple[int, int]] | None = None, frames_failed: int = 0
) -> str:
    """One phrase for the frames a run lost, e.g. ``"697 frames lost in 1 gap (frames 3-699)"``; "" for none.

    Parameters
    ----------
    frames_missing, n_gaps : int
        Frames that never arrived and the gaps they make.
    gaps : list of (int, int), optional
        The gaps' ``(first, last)`` seqs; the first few are named.
    frames_failed : int
        Frames that arrived but could not be analyzed.

    Examples
    --------
    >>> describe_losses(697, 1, [(3, 699)])
    '697 frames lost in 1 gap (frames 3-699)'
    >>> describe_losses(0, 0, frames_failed=2)
    '2 frames could not be analyzed'
    """
    parts = []
    if frames_missing > 0:
        plural = ("s" if frames_missing != 1 else "", "s" if n_gaps != 1 else "")
        text = f"{frames_missing:,} frame{plural[0]} lost in {n_gaps:,} gap{plural[1]}"
        if gaps:
            named = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps[:_GAPS_NAMED])
            more = ", ..." if len(gaps) > _GAPS_NAMED else ""
            text += f" (frame{'s' if len(gaps) > 1 or gaps[0][0] != gaps[0][1] else ''} {named}{more})"
        parts.append(text)
    if frames_failed > 0:
        parts.append(f"{frames_failed:,} frame{'s' if frames_failed != 1 else ''} could not be analyzed")
    return "; ".join(parts)
