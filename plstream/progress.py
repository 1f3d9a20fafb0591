"""The one-line progress report of a running analysis (on stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from plstream.analysis.session import SessionStatus

__all__ = ["ProgressLine"]


class ProgressLine:
    """Rewrites one status line on a terminal; prints a line every few seconds to a log file.

    Parameters
    ----------
    stream : text stream
        Where to write (stderr by default).
    interval_s : float
        Minimum time between updates on a terminal.
    log_interval_s : float
        Minimum time between lines when the stream is not a terminal.
    """

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.25, log_interval_s: float = 5.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval_s if self._tty else log_interval_s
        self._last = 0.0
        self._width = 0

    @staticmethod
    def format(status: SessionStatus) -> str:
        total = f"/{status.source_frames}" if status.source_frames else ""
        dx, dy = status.drift_xy
        parts = [
            f"frames in {status.frames_received}{total}",
            f"analyzed {status.frames_analyzed}",
            f"{status.frames_per_second():.1f} frames/s",
            f"spots {status.spots}",
            f"drift {dx:+.2f}, {dy:+.2f} px",
        ]
        if status.frames_missing:
            parts.append(f"missing {status.frames_missing}")
        if status.frames_failed:
            parts.append(f"failed {status.frames_failed}")
        return " | ".join(parts)

    def __call__(self, status: SessionStatus) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        self._write(self.format(status))

    def _write(self, line: str) -> None:
        if self._tty:
            pad = max(0, self._width - len(line))
            self._stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self, status: SessionStatus) -> None:
        """Write the final state and end the line."""
        self._write(self.format(status))
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
