"""Latency from publish to result, per frame, with a live source paced at 100 and 1000 frames/s.

For each rate, a source process renders a pool of simulated frames (the
project's simulator; played forwards then backwards, so drift and blinking
stay continuous) and then releases one every ``1/rate`` s on an absolute
schedule, like a camera: through :func:`plstream.stream.publish` with the live
queue (``stream.live_queue_frames``; a frame that finds it full is dropped and
counted) and a :class:`~plstream.stream.FramePublisher` PUSH socket to this
process, which analyzes the stream as ``plstream run`` does
(:func:`plstream.orchestration.analyze_stream`: session, analyzer, HDF5 writer,
live results served to dashboards unless ``--no-live``).

Times (one clock, ``time.time()``, both processes on this machine):

- ``t_pub``: stamped into each frame's metadata by the
  :class:`~plstream.stream.FramePublisher` when it sends the frame;
- acquisition: the frame's ``timestamp``, the moment the source released it
  (before the live queue);
- result: the moment ``StreamingAnalyzer.process`` returns the frame's result
  row (hooked from the outside, before the row is queued for the file).

The analyzer holds the first rows back until the reference offset is settled
(24 frames, returned together): rows that come out together with others are
left out of the statistics, and the number left out is printed. Frames
dropped by the source's queue and gaps in the sequence numbers are printed
too. Prints one table. Run by hand::

    .venv/bin/python benchmarks/latency.py                         # 256x256, 60 emitters, 10 s per rate
    .venv/bin/python benchmarks/latency.py --size 512 --emitters 300
    .venv/bin/python benchmarks/latency.py --seconds 2 --pool 100  # quick check
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common
import numpy as np
import zmq

from plstream.acquire_adapters import Frame, SimulatedCamera, SimulationParams
from plstream.config import Settings
from plstream.orchestration import analyze_stream
from plstream.stream import FrameMessage, FramePublisher, FrameSubscriber, publish

logger = logging.getLogger("benchmarks.latency")

_JOIN_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------- source process
class _PacedPool:
    """A live FrameSource: frames from a pool (forwards, then backwards, ...) released at ``rate`` frames/s."""

    def __init__(self, frames: list[np.ndarray], n_frames: int, rate_hz: float, description: dict[str, Any]) -> None:
        self._frames, self._n, self._rate = frames, n_frames, rate_hz
        self._description = {
            **description,
            "source": "benchmark paced pool",
            "n_frames": n_frames,
            "frame_rate_hz": rate_hz,
        }
        self._closed = False

    def describe(self) -> dict[str, Any]:
        return dict(self._description)

    def _index(self, seq: int) -> int:
        period = 2 * (len(self._frames) - 1)
        if period <= 0:
            return 0
        k = seq % period
        return k if k < len(self._frames) else period - k

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        for seq in range(self._n):
            wait = start + seq / self._rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if self._closed:
                return
            yield Frame(seq=seq, timestamp=time.time(), data=self._frames[self._index(seq)], metadata={})

    def stop(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True


def _source_main(
    params: SimulationParams,
    seed: int,
    rate_hz: float,
    n_frames: int,
    endpoint: str,
    settings: Settings,
    stop: Any,
    results: Any,
) -> None:
    """Entry point of the spawned source process: render the pool, then publish it paced."""
    logging.basicConfig(level=logging.WARNING, format="latency source: %(levelname)s: %(message)s")
    logging.getLogger("plstream.stream.publisher").setLevel(logging.ERROR)  # drops are counted in the table
    try:
        camera = SimulatedCamera(params, seed)
        frames = [camera.render_frame(t) for t in range(params.n_frames)]
        source = _PacedPool(frames, n_frames, rate_hz, camera.describe())
        with (
            zmq.Context() as context,
            FramePublisher(
                context,
                endpoint,
                bind=False,
                send_hwm=settings.stream.send_hwm,
                linger_ms=int(settings.stream.peer_timeout_s * 1000),
            ) as publisher,
        ):
            counters = publish(
                source,
                publisher,
                stop_event=stop,
                heartbeat_interval_s=settings.stream.heartbeat_interval_s,
                queue_frames=settings.stream.live_queue_frames,
            )
        results.put(("ok", counters))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        results.put(("error", f"{type(exc).__name__}: {exc}"))


# ---------------------------------------------------------------------- analyzer side
class _Recorder:
    """Wraps a subscriber: notes each frame's publish and acquisition time as it is received."""

    def __init__(self, subscriber: FrameSubscriber) -> None:
        self._subscriber = subscriber
        self.published: dict[int, float] = {}
        self.acquired: dict[int, float] = {}

    @property
    def counters(self) -> dict[str, int]:
        return self._subscriber.counters

    def receive(self, timeout_s: float) -> Any:
        message = self._subscriber.receive(timeout_s)
        if isinstance(message, FrameMessage):
            t_pub = message.metadata.get("t_pub")
            self.published[message.seq] = float(t_pub) if isinstance(t_pub, (int, float)) else math.nan
            self.acquired[message.seq] = float(message.timestamp)
        return message

    def send_ready(self, run_uid: str) -> bool:
        return self._subscriber.send_ready(run_uid)

    def send_heartbeat(self, run_uid: str, frames_received: int) -> bool:
        return self._subscriber.send_heartbeat(run_uid, frames_received)

    def send_done(self, run_uid: str, frames_received: int) -> bool:
        return self._subscriber.send_done(run_uid, frames_received)


def _percentiles_ms(values: np.ndarray) -> list[str]:
    if values.size == 0:
        return ["-", "-", "-"]
    p50, p99 = np.percentile(values, [50, 99])
    return [f"{p50 * 1e3:.1f}", f"{p99 * 1e3:.1f}", f"{values.max() * 1e3:.1f}"]


def measure(
    rate_hz: float,
    seconds: float,
    params: SimulationParams,
    seed: int,
    settings: Settings,
    folder: Path,
    live: dict[str, Any],
) -> list[Any]:
    """One paced run; returns its table row."""
    n_frames = max(1, round(rate_hz * seconds))
    mp = multiprocessing.get_context("spawn")
    stop, results = mp.Event(), mp.Queue()
    with (
        zmq.Context() as context,
        FrameSubscriber(
            context,
            "tcp://127.0.0.1:0",
            bind=True,
            pattern="data",
            max_frame_bytes=int(settings.stream.max_frame_mb * 2**20),
        ) as subscriber,
    ):
        recorder = _Recorder(subscriber)
        process = mp.Process(
            target=_source_main,
            name="latency-source",
            daemon=True,
            args=(params, seed, rate_hz, n_frames, subscriber.endpoint, settings, stop, results),
        )
        process.start()
        try:
            with _common.watch_analyzers(rows=True) as watch:
                outcome = analyze_stream(
                    recorder,  # type: ignore[arg-type]  # a FrameSubscriber in all that analyze_stream uses
                    settings,
                    folder / f"latency-{rate_hz:g}.h5",
                    stop_event=threading.Event(),
                    source_alive=process.is_alive,
                    **live,
                )
        finally:
            stop.set()
            process.join(_JOIN_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
    try:
        kind, payload = results.get(timeout=1.0)
    except queue.Empty:
        kind, payload = "unknown", {}
    if kind == "error" or outcome.status != "complete":
        raise RuntimeError(f"the {rate_hz:g} frames/s run failed: {outcome.error or payload}")

    status = outcome.session_status
    produced = watch.rows
    alone = sorted(seq for seq, (_, together) in produced.items() if together == 1)
    result_t = np.array([produced[s][0] for s in alone])
    pub = np.array([recorder.published.get(s, math.nan) for s in alone])
    acq = np.array([recorder.acquired.get(s, math.nan) for s in alone])
    pub_latency = (result_t - pub)[np.isfinite(pub)]
    acq_latency = (result_t - acq)[np.isfinite(acq)]
    span = result_t.max() - result_t.min() if result_t.size > 1 else 0.0
    achieved = (result_t.size - 1) / span if span > 0 else math.nan
    dropped = int(payload.get("dropped_queue_full", 0)) if isinstance(payload, dict) else 0
    return [
        f"{rate_hz:g}",
        f"{n_frames}",
        f"{dropped}",
        f"{status.frames_missing} / {status.gaps}",
        f"{status.frames_analyzed}",
        f"{status.frames_analyzed - len(alone)}",
        f"{achieved:.0f}",
        *_percentiles_ms(pub_latency),
        *_percentiles_ms(acq_latency),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000", help="source rates to measure, frames/s (default 100,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each run, s (default 10)")
    parser.add_argument("--size", type=int, default=256, help="frame size, px, square (default 256, as plstream run)")
    parser.add_argument("--emitters", type=int, default=60, help="simulated emitters (default 60, as plstream run)")
    parser.add_argument(
        "--pool", type=int, default=400, help="distinct frames rendered before the run and cycled (default 400)"
    )
    _common.add_common_arguments(parser, live_served_by="plstream run")
    args = _common.parse_arguments(parser, argv)
    if args.verbose == 0:  # one warning per gap or full queue would bury the table; the table counts them
        logging.getLogger("plstream.stream.subscriber").setLevel(logging.ERROR)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rates takes numbers separated by commas, e.g. 100,1000; got {args.rates!r}")
    if not rates or min(rates) <= 0 or args.seconds <= 0 or args.pool < 2:
        parser.error("need positive --rates and --seconds, and --pool >= 2")

    params = _common.simulation_params(args.size, args.pool, args.emitters)
    settings = _common.settings_from(parser, args.overrides)
    live = _common.live_results_kwargs(settings, serve=not args.no_live)
    if live:
        live["linger_s"] = 0.0  # no one watches; do not wait after each run
    print("compiling / loading the analysis kernels...", file=sys.stderr, flush=True)
    camera = SimulatedCamera(params, args.seed)
    _common.warm_up(settings, camera.describe(), (camera.render_frame(t) for t in range(params.n_frames)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="plstream-latency-") as folder:
        for rate in rates:
            print(f"{rate:g} frames/s for {args.seconds:g} s...", file=sys.stderr, flush=True)
            rows.append(measure(rate, args.seconds, params, args.seed, settings, Path(folder), live))
    title = (
        f"plstream latency, live source -> ZeroMQ -> analyzer: {args.size}x{args.size} px, "
        f"{args.emitters} emitters, "
        f"{args.seconds:g} s per rate, live queue {settings.stream.live_queue_frames} frames, "
        f"send HWM {settings.stream.send_hwm}, live results {'served' if live else 'not served'}; "
        f"{_common.settings_note(args.overrides)}\nmachine: {_common.machine_description()}\n"
    )
    headers = [
        "frames/s",
        "released",
        "dropped",
        "missing/gaps",
        "analyzed",
        "held",
        "results/s",
        "pub p50 ms",
        "pub p99",
        "pub max",
        "acq p50 ms",
        "acq p99",
        "acq max",
    ]
    notes = [
        "",
        "pub = publish (t_pub, at the send) -> result row; acq = acquisition (frame timestamp, before the live "
        "queue) -> result row.",
        "dropped = frames the source's live queue had no room for; missing/gaps = frames the analyzer never "
        "received / runs of consecutive missing seqs.",
        "held = rows returned together with others (the first rows, held until the reference offset settles, "
        "and any returned at the end): not in the statistics.",
        "results/s = rows produced per second over the rows in the statistics (the source rate, or the analyzer's "
        "capacity when it falls behind).",
    ]
    print(_common.format_table(headers, rows, title=title, notes=notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
