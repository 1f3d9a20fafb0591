"""Repeated warnings at a bounded rate: the first few per interval, then a count."""

from __future__ import annotations

import logging

from plstream.stream.log_limit import LimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_a_few_lines_per_interval_with_a_count(caplog):
    clock = Clock()
    log = LimitedLog(logging.getLogger("test.flood"), interval_s=5.0, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.flood"):
        written = [log.warning("bad", "bad message %d", i) for i in range(100_000)]
        assert sum(written) == 3
        clock.now = 5.0
        assert log.warning("bad", "bad message %d", 100_000)
        clock.now = 6.0
        for i in range(10):
            log.warning("bad", "bad message %d", i)
            log.info("gap", "gap %d", i)  # another kind has its own budget
        log.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["bad message 0", "bad message 1", "bad message 2"]
    assert lines[3] == "bad message 100000 (and 99997 more like this in the 5 s before, not logged)"
    assert [line for line in lines if line.startswith("gap")] == ["gap 0", "gap 1", "gap 2"]
    assert "8 more lines like 'bad' were not logged (at most 3 per 5 s)" in lines
    assert "7 more lines like 'gap' were not logged (at most 3 per 5 s)" in lines
    assert len(lines) == 3 + 1 + 2 + 3 + 2
    gap_summary = next(r for r in caplog.records if "like 'gap'" in r.getMessage())
    assert gap_summary.levelno == logging.INFO
