"""Memory of the live result server when many viewers ask for the whole history and never read.

An analyzer's history of ``--frames`` × ``--spots`` (default 20,000 × 300:
30 MB of rows) is served by a :class:`~plstream.stream.LiveResultServer` on
127.0.0.1 in a child process (the "analyzer"; no analysis runs, the history
is synthetic). A second child opens ``--clients`` DEALER sockets (default 50;
receive queue of 1 message and a 4 KiB socket buffer, so they take as little
as they can), each sends ``--requests`` requests for the whole history (rows
from 0, ``max_frames`` 1,000,000), and never reads. The analyzer's resident
memory (VmRSS, sampled every 50 ms from /proc) is reported before, at its
peak while the viewers hang on (``--hold-s``), and after they disconnect
(waiting up to ``--leave-s`` for it to come back within 10 MB of where it
started), with the server's counters. ``--unbounded`` also runs the server
with its limits lifted (one page = the whole history, no budget, 4 replies
per viewer: what plstream did before) for comparison. Run by hand (Linux)::

    .venv/bin/python benchmarks/live_memory.py [--clients 50] [--frames 20000] [--spots 300] [--unbounded]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _common
import numpy as np
import zmq

from plstream.config import default_settings
from plstream.stream.live import LiveRequest, LiveResultServer, LiveState, encode_request

_SAMPLE_S = 0.05
_RETURN_MARGIN_KIB = 10 * 1024
_LIMITS = {
    "bounded": None,  # the defaults: live.max_reply_mb, live.max_queued_mb, one reply queued per viewer
    "unbounded": {"max_reply_bytes": 1 << 40, "max_queued_bytes": 1 << 50, "send_hwm": 4},
}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _history(frames: int, spots: int) -> LiveState:
    state = LiveState({"run_uid": "bench", "result_path": "bench.h5"}, lambda: {"state": "running"})
    rng = np.random.default_rng(0)
    for t in range(frames):
        row = SimpleNamespace(
            index=t,
            seq=t,
            timestamp=t * 0.01,
            drift_xy=np.zeros(2),
            intensity=rng.random(spots, dtype=np.float32),
            state=np.ones(spots, np.int8),
        )
        state.append(row)
    state.set_spots(np.arange(spots, dtype=float), np.arange(spots, dtype=float), np.zeros(spots, np.int64))
    return state


def _viewers(endpoint: str, clients: int, requests: int) -> int:
    """Child: ``clients`` viewers that ask and never read; they leave when stdin says so."""
    context = zmq.Context()
    sockets = []
    for i in range(clients):
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.RCVHWM, 1)
        socket.setsockopt(zmq.RCVBUF, 4096)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        for r in range(requests):
            request_id = (i * requests + r + 1).to_bytes(8, "little")
            socket.send_multipart([request_id, *encode_request(LiveRequest(max_frames=1_000_000))])
        sockets.append(socket)
    print("asked", flush=True)
    sys.stdin.readline()
    for socket in sockets:
        socket.close(linger=0)
    context.term()
    return 0


def _analyzer(args: argparse.Namespace) -> int:
    """Child: serve the history, let the viewers ask, measure; prints one JSON line."""
    state = _history(args.frames, args.spots)
    gc.collect()
    live = default_settings().live
    limits = _LIMITS[args.limits] or {
        "max_reply_bytes": int(live.max_reply_mb * 2**20),
        "max_queued_bytes": int(live.max_queued_mb * 2**20),
    }
    context = zmq.Context()
    server = LiveResultServer(context, "tcp://127.0.0.1:0", state.update_for, **limits)
    server.start()
    time.sleep(0.5)
    before = _rss_kib()
    viewers = subprocess.Popen(
        [sys.executable, __file__, "--role", "viewers", "--endpoint", server.endpoint]
        + ["--clients", str(args.clients), "--requests", str(args.requests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert viewers.stdout is not None and viewers.stdin is not None
    viewers.stdout.readline()
    peak = before
    deadline = time.monotonic() + args.hold_s
    while time.monotonic() < deadline:
        peak = max(peak, _rss_kib())
        time.sleep(_SAMPLE_S)
    held = _rss_kib()
    counters_held = dict(server.counters)
    queued_held = server.queued_bytes
    viewers.stdin.write("leave\n")
    viewers.stdin.flush()
    viewers.wait(60)
    left_at = time.monotonic()
    returned_s = None
    while time.monotonic() - left_at < args.leave_s:
        if _rss_kib() <= before + _RETURN_MARGIN_KIB:
            returned_s = time.monotonic() - left_at
            break
        time.sleep(_SAMPLE_S)
    after = _rss_kib()
    server.close()
    context.term()
    print(
        json.dumps(
            {
                "limits": args.limits,
                "history_mb": (state.n_frames * (32 + 5 * state.n_spots)) / 2**20,
                "before_mb": before / 1024,
                "peak_mb": peak / 1024,
                "held_mb": held / 1024,
                "after_mb": after / 1024,
                "returned_s": returned_s,
                "queued_mb_held": queued_held / 2**20,
                "queued_mb_after": server.queued_bytes / 2**20,
                "counters_held": counters_held,
                "counters_after": dict(server.counters),
            }
        )
    )
    return 0


def _row(result: dict[str, Any]) -> list[Any]:
    c = result["counters_held"]
    returned = "-" if result["returned_s"] is None else f"{result['returned_s']:.1f}"
    return [
        result["limits"],
        f"{result['before_mb']:.0f}",
        f"{result['peak_mb']:.0f}",
        f"{result['peak_mb'] - result['before_mb']:+.0f}",
        f"{result['held_mb'] - result['before_mb']:+.0f}",
        f"{result['after_mb'] - result['before_mb']:+.0f}",
        returned,
        c["replies"],
        c["refused"],
        c["dropped"],
        f"{result['queued_mb_held']:.0f}",
        result["counters_after"]["released_on_leave"],
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the measurement(s) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="viewers that ask and never read (default 50)")
    parser.add_argument("--requests", type=int, default=1, help="requests each viewer sends (default 1)")
    parser.add_argument("--frames", type=int, default=20_000, help="frames in the served history (default 20000)")
    parser.add_argument("--spots", type=int, default=300, help="spots in the served history (default 300)")
    parser.add_argument("--hold-s", type=float, default=10.0, help="how long the viewers hang on, s (default 10)")
    parser.add_argument("--leave-s", type=float, default=30.0, help="longest wait for the memory to return, s")
    parser.add_argument("--unbounded", action="store_true", help="also run without the limits, for comparison")
    parser.add_argument("--role", choices=("main", "analyzer", "viewers"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--limits", choices=tuple(_LIMITS), default="bounded", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    _common.add_common_arguments(parser, seed=False, settings=False)
    args = _common.parse_arguments(parser, argv)
    if args.role == "viewers":
        return _viewers(args.endpoint, args.clients, args.requests)
    if args.role == "analyzer":
        return _analyzer(args)
    results = []
    for limits in ("bounded", "unbounded") if args.unbounded else ("bounded",):
        print(f"live_memory: serving {args.frames} frames x {args.spots} spots ({limits})...", file=sys.stderr)
        command = [sys.executable, __file__, "--role", "analyzer", "--limits", limits]
        for flag in ("clients", "requests", "frames", "spots", "hold_s", "leave_s"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    live = default_settings().live
    print(
        _common.format_table(
            [
                "server",
                "RSS before MB",
                "peak MB",
                "peak growth",
                "growth held",
                "growth after leaving",
                "back in s",
                "replies",
                "refused",
                "dropped",
                "queued MB",
                "released on leave",
            ],
            [_row(r) for r in results],
            title=(
                f"live result server, {args.clients} viewers x {args.requests} request(s) for the whole history of "
                f"{args.frames} frames x {args.spots} spots ({results[0]['history_mb']:.0f} MB of rows), never "
                f"reading, held {args.hold_s:g} s"
            ),
            notes=[
                _common.machine_description(),
                f"bounded: live.max_reply_mb = {live.max_reply_mb:g}, live.max_queued_mb = {live.max_queued_mb:g}, "
                "1 reply queued per viewer; unbounded: one page = the whole history, no budget, 4 per viewer",
                "growth = analyzer VmRSS minus its value before the viewers came; 'back in s': until it is within "
                "10 MB of that (- = not within --leave-s)",
                "queued MB: replies the server accounts as in flight while the viewers hang on",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
