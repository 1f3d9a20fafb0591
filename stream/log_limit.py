"""Log lines that can repeat without end (a flood of bad messages, gap after gap), at a bounded rate.

A peer that sends 100 000 malformed messages, or a camera that loses a frame
every few milliseconds, must not write 15 MB of identical warnings: the
counters (in the result file's summary) are the record, and the log only has
to say that it happens. :class:`LimitedLog` writes the first few lines of each
kind in every interval, counts the rest, and says how many were left out on
the next line of that kind (or at :meth:`LimitedLog.flush`).

Examples
--------
>>> import logging
>>> log = LimitedLog(logging.getLogger("demo"), interval_s=5.0, burst=3)
>>> for seq in range(1000):
...     log.warning("gap", "frame %d never arrived", seq)  # 3 lines, then one line per 5 s with a count
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LimitedLog"]


@dataclass
class _Kind:
    window_start: float
    level: int
    logged: int = 0
    left_out: int = 0


class LimitedLog:
    """At most ``burst`` lines of each kind per ``interval_s``; the others are counted and reported.

    Parameters
    ----------
    logger : logging.Logger
    interval_s : float
        Length of a window, s.
    burst : int
        Lines of one kind written per window (the first ones).
    clock : callable
        Monotonic clock, s (a test passes its own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 5.0,
        burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = float(interval_s)
        self._burst = int(burst)
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, kind: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless this window's lines of ``kind`` are used up; True if it was written."""
        now = self._clock()
        state = self._kinds.get(kind)
        left_out = 0
        if state is None or now - state.window_start >= self._interval_s:
            left_out = state.left_out if state is not None else 0
            state = self._kinds[kind] = _Kind(window_start=now, level=level)
        if state.logged >= self._burst:
            state.left_out += 1
            return False
        state.logged += 1
        if left_out:
            message += " (and %d more like this in the %.0f s before, not logged)"
            args = (*args, left_out, self._interval_s)
        self._logger.log(level, message, *args)
        return True

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, message, *args)

    def info(self, kind: str, message: str, *args: Any) -> bool:
        return self.log(logging.INFO, kind, message, *args)

    def flush(self) -> None:
        """Say how many lines of each kind were left out since they were last reported (e.g. at the end of a run)."""
        for kind, state in self._kinds.items():
            if state.left_out:
                self._logger.log(
                    state.level,
                    "%d more lines like '%s' were not logged (at most %d per %.0f s)",
                    state.left_out,
                    kind,
                    self._burst,
                    self._interval_s,
                )
                state.left_out = 0
