"""kill -9 at random moments: every result file recovers, no process and no temporary folder is left behind.

Two set-ups, each killed ``--kills`` times (default 20) at a random moment of
the run (uniform over ``--window`` seconds after its first commit):

- ``replay``: ``plstream replay MOVIE`` (the analysis, with its spawned source
  process and private IPC folder) is killed with SIGKILL;
- ``split``: ``plstream acquire`` + ``plstream analyze`` over TCP on
  127.0.0.1; the analyzer (or, in one run of three, the acquirer) is killed.

After each kill: the killed process's children must be gone within 10 s, its
``plstream-<pid>-*`` folder too, the surviving half of a split set-up must
end on its own (within ``stream.peer_timeout_s``: 3 s for the acquirer,
15 s for the analyzer here), and ``plstream recover`` must leave a file that plain
``h5py.File(path, "r")`` opens. Run by hand (Linux: reads ``/proc``)::

    .venv/bin/python benchmarks/kill_recover.py [--kills 20] [--mode replay|split|both] [--seed 0]
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
from _common import cached_movie, format_table, machine_description, process_tree, simulation_params

ENV = dict(os.environ, PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
PEER_TIMEOUT_S = 3.0
ANALYZER_TIMEOUT_S = 15.0


def plstream(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "plstream", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(condition: Any, timeout_s: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return time.monotonic() - started if condition() else None


def committed(path: Path) -> int:
    try:
        with h5py.File(path, "r", swmr=True) as f:
            return int(f["/stream/committed"][()]["frames"])
    except (OSError, KeyError):
        return 0


def wait_first_commit(path: Path, procs: list[subprocess.Popen], timeout_s: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        if committed(path) > 0:
            return True
        time.sleep(0.05)
    return False


def recover(path: Path) -> tuple[bool, int, str]:
    """``plstream recover``, then a plain open: (readable, frames, status)."""
    proc = subprocess.run(
        [sys.executable, "-m", "plstream", "recover", str(path)], capture_output=True, text=True, env=ENV, timeout=300
    )
    if proc.returncode != 0:
        return False, 0, proc.stderr.strip()[-200:]
    try:
        with h5py.File(path, "r") as f:
            return True, int(f["/frames/seq"].shape[0]), str(f.attrs["status"])
    except OSError as exc:
        return False, 0, str(exc)[:200]


def kill_tree(pid: int) -> None:
    for p in process_tree(pid):
        if running(p):
            os.kill(p, signal.SIGKILL)


def one_replay(movie: Path, out: Path, delay_s: float) -> dict[str, Any]:
    proc = plstream("replay", str(movie), "--out", str(out), "--headless", "--live", "")
    result: dict[str, Any] = {"victim": "replay"}
    try:
        if not wait_first_commit(out, [proc]):
            result["skipped"] = (
                f"the run ended first ({proc.poll()}): {proc.stderr.read()[-300:] if proc.stderr else ''}"
            )
            return result
        time.sleep(delay_s)
        if proc.poll() is not None:
            result["skipped"] = "the replay finished before the kill"
            return result
        children = [p for p in process_tree(proc.pid) if p != proc.pid]
        folders = glob.glob(os.path.join(tempfile.gettempdir(), f"plstream-{proc.pid}-*"))
        result["frames_at_kill"] = committed(out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        result["children_gone_s"] = wait_until(lambda: not [p for p in children if running(p)], 10.0)
        result["orphans"] = sum(running(p) for p in children)
        result["folders_left"] = (
            sum(os.path.exists(f) for f in folders)
            if wait_until(lambda: not any(os.path.exists(f) for f in folders), 10.0) is None
            else 0
        )
        for p in children:
            if running(p):
                os.kill(p, signal.SIGKILL)
    finally:
        kill_tree(proc.pid)
        proc.communicate(timeout=60)
    result["readable"], result["frames_kept"], result["status"] = recover(out)
    return result


def one_split(out: Path, delay_s: float, kill_analyzer: bool) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    timeouts = ["--set", f"stream.peer_timeout_s={PEER_TIMEOUT_S}", "--set", "stream.silence_warning_s=1"]
    # The analyzer waits longer: the acquirer may take a few seconds to start (imports, the simulated movie).
    patient = ["--set", f"stream.peer_timeout_s={ANALYZER_TIMEOUT_S}", "--set", "stream.silence_warning_s=1"]
    small = ["--set", "simulation.shape_px=[128, 128]", "--set", "simulation.n_emitters=20"]
    acquire = plstream(
        "acquire", "simulated", "--bind", endpoint, "--unpaced", "--frames", "1000000", *timeouts, *small
    )
    analyze = plstream("analyze", "--connect", endpoint, "--out", str(out), "--live", "", *patient)
    victim, survivor = (analyze, acquire) if kill_analyzer else (acquire, analyze)
    result: dict[str, Any] = {"victim": "analyze" if kill_analyzer else "acquire"}
    try:
        if not wait_first_commit(out, [acquire, analyze]):
            result["skipped"] = "a process ended before the first commit"
            return result
        time.sleep(delay_s)
        result["frames_at_kill"] = committed(out)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        result["survivor_exit_s"] = wait_until(lambda: survivor.poll() is not None, PEER_TIMEOUT_S + 60)
        result["survivor_status"] = survivor.poll()
        result["orphans"] = int(survivor.poll() is None)
        result["folders_left"] = 0  # TCP: no private folders
    finally:
        for proc in (acquire, analyze):
            kill_tree(proc.pid)
            proc.communicate(timeout=60)
    result["readable"], result["frames_kept"], result["status"] = recover(out)
    return result


def summarize(name: str, results: list[dict[str, Any]]) -> list[Any]:
    done = [r for r in results if "skipped" not in r]
    kept = [r["frames_kept"] for r in done if r["readable"]]
    exits = [r.get("children_gone_s") or r.get("survivor_exit_s") for r in done]
    exits = [e for e in exits if e is not None]
    return [
        name,
        len(done),
        len(results) - len(done),
        f"{sum(r['readable'] for r in done)}/{len(done)}",
        f"{min(kept)}/{statistics.median(kept):.0f}/{max(kept)}" if kept else "-",
        sum(r.get("orphans", 0) for r in done),
        sum(r.get("folders_left", 0) for r in done),
        f"{max(exits):.2f}" if exits else "-",
        ", ".join(sorted({str(r["status"]) for r in done})),
    ]


def main(argv: list[str] | None = None) -> int:
    """Kill, check, recover; print one table. Exit status 1 if any file did not recover or anything was left."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills per set-up (default 20)")
    parser.add_argument("--mode", choices=("replay", "split", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments")
    parser.add_argument("--window", type=float, default=4.0, help="kill within this many s of the first commit")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "plstream-bench")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    args.folder.mkdir(parents=True, exist_ok=True)
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="kill-recover-") as work:
        if args.mode in ("replay", "both"):
            movie = cached_movie(args.folder, simulation_params(128, 8000, 20))
            results = []
            for i in range(args.kills):
                result = one_replay(movie, Path(work) / f"replay-{i}.h5", rng.uniform(0.0, args.window))
                print(f"replay kill {i + 1}/{args.kills}: {result}", file=sys.stderr, flush=True)
                results.append(result)
            rows.append(summarize("replay (kill -9 the analysis)", results))
            failed |= any(not r.get("readable", True) or r.get("orphans") or r.get("folders_left") for r in results)
        if args.mode in ("split", "both"):
            results = []
            for i in range(args.kills):
                kill_analyzer = i % 3 != 2
                result = one_split(Path(work) / f"split-{i}.h5", rng.uniform(0.0, args.window), kill_analyzer)
                print(f"split kill {i + 1}/{args.kills}: {result}", file=sys.stderr, flush=True)
                results.append(result)
            rows.append(summarize("split (kill -9 analyze, or acquire 1 in 3)", results))
            failed |= any(not r.get("readable", True) or r.get("orphans") for r in results)
    headers = [
        "set-up",
        "kills",
        "skipped",
        "readable after recover",
        "frames kept min/med/max",
        "orphaned processes",
        "temp folders left",
        "max s to exit",
        "statuses",
    ]
    notes = [
        f"machine: {machine_description()}",
        "max s to exit: replay: until the killed analysis's children (source process, helper) were gone;",
        f"  split: until the surviving half ended (stream.peer_timeout_s = {PEER_TIMEOUT_S:g} s for acquire, "
        f"{ANALYZER_TIMEOUT_S:g} s for analyze)",
    ]
    print(format_table(headers, rows, title="kill -9 at random moments, then plstream recover", notes=notes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
