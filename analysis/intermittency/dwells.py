"""Dwell times from state sequences or segments, with censoring.

A dwell is a run of consecutive frames in one state (ON, OFF or GRAY). Dwells
whose start or end was not seen are *censored* and are not counted as
complete:

- **left-censored**: the first dwell of a trace, and the first after a gap
  in the stream or a frame that could not be measured (its start was not seen);
- **right-censored**: the last dwell of a trace, the last before a gap or an
  unmeasured frame, and the dwell cut by photobleaching (it would have gone on).

Photobleaching is recognized as a trace that *ends* in an OFF dwell of at
least ``bleach_min_frames`` frames that is longer than every other OFF dwell
of the spot; the dwell before it is then right-censored too.

Fits (:mod:`.fits`) use complete dwells in full and right-censored ones
through the survival function; left-censored dwells are left out (a
power-law dwell in progress at the start is length-biased).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DwellTable", "dwells_from_segments", "dwells_from_states", "log_binned_density"]


@dataclass(frozen=True)
class DwellTable:
    """The dwells of one spot (or several: ``spot`` says whose), in time order per spot.

    Attributes
    ----------
    spot : (D,) int64
    state : (D,) int8
        OFF 0, ON 1, GRAY 2.
    start, length : (D,) int64
        First frame index and frames.
    left_censored, right_censored : (D,) bool
    bleached : (D,) bool
        The dwell was cut by photobleaching (then also right-censored).
    """

    spot: np.ndarray
    state: np.ndarray
    start: np.ndarray
    length: np.ndarray
    left_censored: np.ndarray
    right_censored: np.ndarray
    bleached: np.ndarray

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def complete(self) -> np.ndarray:
        """(D,) bool: neither start nor end censored."""
        return ~(self.left_censored | self.right_censored)

    def of_state(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """``(complete, right_censored)`` lengths (frames) of the dwells in ``state`` (left-censored ones left out)."""
        sel = (self.state == state) & ~self.left_censored
        return self.length[sel & ~self.right_censored], self.length[sel & self.right_censored]

    @staticmethod
    def concatenate(tables: list[DwellTable]) -> DwellTable:
        if not tables:
            return _empty()
        return DwellTable(
            *(np.concatenate([getattr(t, name) for t in tables]) for name in DwellTable.__dataclass_fields__)
        )


def _empty() -> DwellTable:
    i = np.zeros(0, np.int64)
    b = np.zeros(0, bool)
    return DwellTable(i, np.zeros(0, np.int8), i, i, b, b, b)


def dwells_from_segments(
    spot: int,
    start: np.ndarray,
    length: np.ndarray,
    label: np.ndarray,
    starts_piece: np.ndarray,
    *,
    bleach_min_frames: int = 100,
) -> DwellTable:
    """The dwells of one spot from its labelled segments (in time order).

    Consecutive segments with the same label are one dwell unless a gap lies
    between them (``starts_piece``, or frames missing between them).
    ``bleach_min_frames`` <= 0 turns the photobleaching rule off.
    """
    start = np.asarray(start, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    label = np.asarray(label, dtype=np.int8)
    piece = np.asarray(starts_piece, dtype=bool).copy()
    k = len(start)
    if k == 0:
        return _empty()
    piece[0] = True
    piece[1:] |= start[1:] != start[:-1] + length[:-1]
    new_dwell = piece.copy()
    new_dwell[1:] |= label[1:] != label[:-1]
    first = np.flatnonzero(new_dwell)
    lengths = np.add.reduceat(length, first)
    states = label[first]
    starts = start[first]
    left = piece[first]
    ends_piece = np.zeros(len(first), bool)
    ends_piece[:-1] = left[1:]
    ends_piece[-1] = True
    bleached = np.zeros(len(first), bool)
    if bleach_min_frames > 0 and len(first) >= 2 and states[-1] == 0 and lengths[-1] >= bleach_min_frames:
        others = (states[:-1] == 0) & ~left[:-1] & ~ends_piece[:-1]
        if not others.any() or lengths[-1] > lengths[:-1][others].max():
            if not left[-1]:  # contiguous with the dwell before it
                bleached[-2] = True
    return DwellTable(
        spot=np.full(len(first), spot, np.int64),
        state=states,
        start=starts,
        length=lengths,
        left_censored=left,
        right_censored=ends_piece | bleached,
        bleached=bleached,
    )


def dwells_from_states(
    states: np.ndarray, seq: np.ndarray | None = None, *, spot: int = 0, bleach_min_frames: int = 100
) -> DwellTable:
    """The dwells of one spot's per-frame states (``-1`` = not measured), e.g. ``/blinking/segmented[:, i]``.

    ``seq`` (the frames' sequence numbers) marks gaps in the stream: a jump
    ends the dwell before it (right-censored) and starts a new one (left-censored).
    """
    states = np.asarray(states, dtype=np.int8)
    t = np.flatnonzero(states >= 0)
    if len(t) == 0:
        return _empty()
    breaks = np.zeros(len(t), bool)
    breaks[0] = True
    breaks[1:] = t[1:] != t[:-1] + 1
    if seq is not None:
        s = np.asarray(seq, dtype=np.int64)[t]
        breaks[1:] |= s[1:] != s[:-1] + 1
    change = breaks.copy()
    change[1:] |= states[t][1:] != states[t][:-1]
    first = np.flatnonzero(change)
    stops = np.append(first[1:], len(t))
    # segments here are already runs: one per dwell; pieces from the breaks
    return dwells_from_segments(
        spot,
        t[first],
        stops - first,
        states[t][first],
        breaks[first],
        bleach_min_frames=bleach_min_frames,
    )


def log_binned_density(lengths: np.ndarray, n_bins: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-binned probability density of dwell lengths (frames), for log-log plots.

    Returns ``(bin centres, density, counts)`` of the non-empty bins; bin
    edges are geometric from 0.5 frame, rounded to half frames (whole frames
    per bin); density = counts / (dwells x bin width), per frame.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    if len(lengths) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    top = max(float(lengths.max()), 2.0)
    edges = np.unique(np.round(np.geomspace(0.5, top + 0.5, n_bins) * 2) / 2)
    edges[0], edges[-1] = 0.5, top + 0.5
    counts, _ = np.histogram(lengths, bins=edges)
    density = counts / (len(lengths) * np.diff(edges))
    centres = np.sqrt(edges[:-1] * edges[1:])
    keep = counts > 0
    return centres[keep], density[keep], counts[keep]
