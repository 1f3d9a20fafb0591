"""The live dashboard on a full-speed ``plstream replay``: what it costs, and whether it slows the analysis.

Pass A (baseline): ``plstream replay MOVIE --headless --live ''`` in a
subprocess, serving nothing. Pass B: the same replay serving live results on a
free port, with ``python -m plstream.dashboard --connect ENDPOINT -v``
(``QT_QPA_PLATFORM=offscreen``, the interactive window) started right after
it. The dashboard is measured over the analysis window, from the replay's
"live results at" line to its "analyzed N frames" line: CPU time from
``/proc/PID/stat`` (utime + stime), redraws (``DashboardWindow.redraw_count``
read at both ends, see below), and its peak RSS (``VmHWM``) at the end.

``plstream.dashboard`` installs no signal handlers (SIGINT only prints a
``KeyboardInterrupt`` from the redraw timer's slot; SIGTERM kills it before its
exit log line), so it runs through a small wrapper around its own ``main``:
SIGUSR1 prints the window's redraw count, SIGTERM quits the Qt event loop, and
``run_dashboard`` then logs its usual exit line (quoted under the table).

Both replays run with ``live.linger_s=0`` (otherwise the served pass would
count a second of lingering) and from a symbolic link to the cached movie
without its truth file (no accuracy evaluation after the run). frames/s is the
replay's own summary (``analyzed N frames in X s``: source process start-up +
analysis + closing the file, after the kernels are loaded).
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import _common

_CHILD = """
import signal, sys, time
def report(*_):
    from pyqtgraph.Qt import QtWidgets
    from plstream.dashboard.views.window import DashboardWindow
    app = QtWidgets.QApplication.instance()
    windows = [w for w in (app.topLevelWidgets() if app else []) if isinstance(w, DashboardWindow)]
    print(f"redraws {time.monotonic():.6f} {windows[0].redraw_count if windows else -1}", flush=True)
def stop(*_):
    from pyqtgraph.Qt import QtWidgets
    app = QtWidgets.QApplication.instance()
    app.quit() if app is not None else sys.exit(143)
signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
from plstream.dashboard.views.app import main
sys.exit(main(sys.argv[1:]))
"""
_SUMMARY = re.compile(r"analyzed (\d+)(?: of \d+)? frames in ([\d.]+) s")
_EXIT_LINE = re.compile(r"dashboard: [\d.]+ redraws/s over .*")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    """One replay pass: its own summary, its process wall time, and the dashboard's figures (pass B)."""

    name: str
    frames: int
    analysis_s: float
    wall_s: float
    cpu_cores: float | None = None
    redraws_per_s: float | None = None
    rss_mib: float | None = None
    exit_line: str = ""

    @property
    def rate(self) -> float:
        return self.frames / self.analysis_s if self.analysis_s > 0 else float("nan")


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` on a port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _follow(stream: IO[str], sink: list[str], on_line: Callable[[str], None]) -> threading.Thread:
    def read() -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            on_line(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def replay_pass(
    name: str, movie: Path, out: Path, overrides: list[str], endpoint: str, dashboard_log: Path | None
) -> Result:
    """Run one replay (with a dashboard on ``endpoint`` when ``dashboard_log`` is given) and measure it."""
    command = [
        sys.executable,
        "-m",
        "plstream",
        "replay",
        str(movie),
        "--out",
        str(out),
        "--overwrite",
        "--headless",
        "--live",
        endpoint,
        "--set",
        "live.linger_s=0",
        *(f"--set={o}" for o in overrides),
    ]
    lines: list[str] = []
    live, done = threading.Event(), threading.Event()

    def on_line(line: str) -> None:
        if "live results at" in line:
            live.set()
        elif _SUMMARY.search(line):
            done.set()

    started = time.monotonic()
    replay = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    readers = [_follow(replay.stdout, lines, on_line)]
    board = None
    if dashboard_log is not None:
        log = dashboard_log.open("w")
        board = subprocess.Popen(
            [sys.executable, "-c", _CHILD, "--connect", endpoint, "-v"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        )
        log.close()
        reports: queue.Queue[str] = queue.Queue()
        readers.append(_follow(board.stdout, [], reports.put))
        try:
            if reports.get(timeout=60) != "ready\n":
                raise RuntimeError("the dashboard wrapper did not start")
            ends = []
            for event in (live, done):
                while not event.wait(0.1):
                    if board.poll() is not None:
                        raise RuntimeError(f"the dashboard ended early (exit status {board.returncode})")
                    if replay.poll() is not None and not (readers[0].join(5) or event.is_set()):
                        raise RuntimeError(f"the replay ended (exit status {replay.returncode}) before its summary")
                t, cpu = time.monotonic(), cpu_seconds(board.pid)
                board.send_signal(signal.SIGUSR1)
                _, t_child, count = reports.get(timeout=10).split()
                ends.append((t, cpu, float(t_child) if int(count) >= 0 else t, max(int(count), 0)))
            (t0, cpu0, c0, n0), (t1, cpu1, c1, n1) = ends
            rss = _common.peak_rss_kib(board.pid) / 1024 or None
        except BaseException:
            for process in (board, replay):
                if process.poll() is None:
                    process.kill()
            print(dashboard_log.read_text()[-3000:], "\n".join(lines[-30:]), sep="\n", file=sys.stderr)
            raise
    replay.wait()
    wall = time.monotonic() - started
    readers[0].join(5)
    match = next((m for m in map(_SUMMARY.search, lines) if m), None)
    if replay.returncode != 0 or match is None:
        print("\n".join(lines[-30:]), file=sys.stderr)
        raise RuntimeError(f"{name}: plstream replay exited with {replay.returncode} (its output is above)")
    result = Result(name, int(match.group(1)), float(match.group(2)), wall)
    if board is not None and dashboard_log is not None:
        board.send_signal(signal.SIGTERM)
        try:
            board.wait(15)
        except subprocess.TimeoutExpired:
            board.kill()
            board.wait()
        exit_line = _EXIT_LINE.search(dashboard_log.read_text())
        result.cpu_cores = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None
        result.redraws_per_s, result.rss_mib = ((n1 - n0) / (c1 - c0) if c1 > c0 else None), rss
        result.exit_line = exit_line.group(0) if exit_line else f"no exit line (exit status {board.returncode})"
    return result


def run(size: int, frames: int, emitters: int, seed: int, cache: Path, overrides: list[str]) -> int:
    """Measure passes A and B on the cached movie and print the table."""
    movie = _common.cached_movie(cache, _common.simulation_params(size, frames, emitters), seed)
    with movie.open("rb") as stream:  # bring the movie into the page cache: both passes read from memory
        while stream.read(1 << 24):
            pass
    with tempfile.TemporaryDirectory(prefix="plstream-dashboard-live-") as folder:
        tmp = Path(folder)
        link = tmp / "movie.tif"  # no movie.truth.h5 beside it: the replay evaluates nothing
        link.symlink_to(movie.resolve())
        print("pass A: replay, nothing served...", file=sys.stderr, flush=True)
        a = replay_pass("A: replay, --live ''", link, tmp / "a.h5", overrides, "", None)
        endpoint = free_endpoint()
        print(f"pass B: replay serving {endpoint} + dashboard...", file=sys.stderr, flush=True)
        b = replay_pass("B: replay + dashboard", link, tmp / "b.h5", overrides, endpoint, tmp / "dashboard.log")

    def fmt(value: float | None, spec: str) -> str | None:
        return None if value is None else format(value, spec)

    rows = [
        [
            p.name,
            f"{p.rate:,.1f}",
            f"{p.analysis_s:.1f}",
            f"{p.wall_s:.1f}",
            fmt(p.cpu_cores, ".2f"),
            fmt(p.redraws_per_s, ".1f"),
            fmt(p.rss_mib, ",.0f"),
            f"{p.rate / a.rate:.3f}",
        ]
        for p in (a, b)
    ]
    title = (
        f"live dashboard on a full-speed plstream replay: {size}x{size} px x {frames} frames x {emitters} "
        f"emitters, seed {seed}; {_common.settings_note(overrides)} + live.linger_s=0\n"
        f"machine: {_common.machine_description()}\n"
    )
    notes = [
        "",
        "frames/s, analysis s: the replay's summary line (source start-up + analysis + closing the file; "
        "kernels loaded before). wall s: the replay process, start to exit.",
        "dashboard CPU (cores) and redraws/s: from the replay's 'live results at' line to its 'analyzed' line; "
        "peak RSS: the dashboard's VmHWM. frames/s vs A: this pass's frames/s / pass A's (below 1: slower).",
        f"dashboard's own exit line (its whole life, start-up included): {b.exit_line}",
    ]
    headers = [
        "pass",
        "frames/s",
        "analysis s",
        "wall s",
        "dashboard CPU cores",
        "redraws/s",
        "dashboard peak RSS MiB",
        "frames/s vs A",
    ]
    print(_common.format_table(headers, rows, title=title, notes=notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="number of frames (default 2000)")
    parser.add_argument("--size", type=int, default=512, help="frame size, px (square; default 512)")
    parser.add_argument("--emitters", type=int, default=300, help="simulated emitters (default 300)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=_common.DEFAULT_CACHE,
        help=f"folder for the simulated movies, reused between runs (default {_common.DEFAULT_CACHE})",
    )
    _common.add_common_arguments(parser)
    args = _common.parse_arguments(parser, argv)
    if args.frames < 2 or args.size < 16 or args.emitters < 1:
        parser.error("need --frames >= 2, --size >= 16 and --emitters >= 1")
    _common.settings_from(parser, args.overrides)  # a bad --set is reported here, not by the replay
    try:
        return run(args.size, args.frames, args.emitters, args.seed, args.cache, args.overrides)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
