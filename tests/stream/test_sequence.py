"""SequenceTracker: the one place that says which frames of a run arrived, are missing or are refused."""

from __future__ import annotations

import random

import pytest

from plstream.stream import EndMessage, FrameMessage, HeartbeatMessage, SequenceTracker, StartMessage
from plstream.stream.sequence import FrameVerdict


def verdicts(tracker, seqs, run="r"):
    return [tracker.frame(run, seq).value for seq in seqs]


def test_in_order_frames_leave_no_gap():
    tracker = SequenceTracker()
    assert tracker.start("r")
    assert verdicts(tracker, range(5)) == ["new"] * 5
    assert tracker.gaps == [] and tracker.frames_missing == 0 and tracker.next_seq == 5


def test_a_jump_records_a_gap_and_late_frames_fill_it():
    tracker = SequenceTracker()
    assert verdicts(tracker, [0, 6]) == ["new", "new"]
    assert tracker.gaps == [(1, 5)] and tracker.frames_missing == 5
    version = tracker.gaps_version
    assert verdicts(tracker, [3, 1, 5]) == ["late"] * 3  # a split, then both ends
    assert tracker.gaps == [(2, 2), (4, 4)] and tracker.frames_missing == 2
    assert tracker.gaps_version == version + 3
    assert verdicts(tracker, [3, 0, 6]) == ["duplicate"] * 3
    assert tracker.counters == {"frames": 5, "late": 3, "duplicates": 3, "implausible": 0, "other_run": 0}


def test_frames_far_ahead_are_refused_as_implausible():
    tracker = SequenceTracker(max_ahead=100)
    assert verdicts(tracker, [0, 2**64 - 1, 10**12, 101, 102]) == ["new", "implausible", "implausible", "new", "new"]
    assert tracker.gaps == [(1, 100)]
    tracker.producer_reached("r", 10**12)  # an end message claiming a trillion frames is not believed either
    assert tracker.next_seq == 103 and tracker.counters["implausible"] == 3


def test_the_producer_announces_frames_it_sent_or_dropped():
    tracker = SequenceTracker()
    for message in (
        StartMessage("r", {}, (2, 2), "uint8", 0.0),
        FrameMessage("r", 0, 0.0, None, {}),
        HeartbeatMessage("r", 3, 0.0, {}),  # frames 1..3 went out but never arrived
        FrameMessage("r", 5, 0.0, None, {}),
        EndMessage("r", 8, "complete", "", {}, 0.0),
    ):
        tracker.observe(message)
    assert tracker.gaps == [(1, 3), (4, 4), (6, 7)] and tracker.frames_missing == 6


def test_a_frame_without_a_start_adopts_its_run_and_counts_the_frames_before_it():
    tracker = SequenceTracker()
    assert tracker.frame("late-join", 7) is FrameVerdict.NEW
    assert tracker.run_uid == "late-join" and tracker.gaps == [(0, 6)]
    assert not tracker.start("another") and tracker.frame("another", 8) is FrameVerdict.OTHER_RUN


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_duplicated_stream_accounts_for_every_frame(seed):
    rng = random.Random(seed)
    sent = [s for s in range(300) if rng.random() > 0.2]  # 20 % lost
    arrivals = sent + rng.sample(sent, 30)  # some repeated
    rng.shuffle(arrivals)
    tracker = SequenceTracker()
    accepted = [s for s in arrivals if tracker.frame("r", s).accepted]
    tracker.producer_reached("r", 300)
    assert sorted(accepted) == sent  # every frame once, duplicates dropped
    missing = {s for first, last in tracker.gaps for s in range(first, last + 1)}
    assert missing == set(range(300)) - set(sent) and tracker.frames_missing == len(missing)
    assert tracker.gaps == sorted(tracker.gaps)


def test_negative_window_is_refused():
    with pytest.raises(ValueError, match="max_ahead"):
        SequenceTracker(max_ahead=-1)
