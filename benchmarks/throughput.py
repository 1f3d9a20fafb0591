"""End-to-end throughput of ``plstream replay``, each stage's share, and the physical reference.

On a simulated movie (written once with the project's simulator and cached,
see ``--cache``), in one process and one run:

1. **reference**: a plain numpy pass over the same TIFF: each frame read with
   ``numpy.fromfile`` and added to a float64 sum. Two passes, the faster
   counts (the first also brings the file into the page cache, so every later
   pass reads from memory as well). Every throughput is also printed as a
   ratio to this one.
2. **end-to-end**: what ``plstream replay MOVIE --out r.h5`` runs
   (:func:`plstream.orchestration.analyze_with_source_process`): the TIFF
   source in a spawned process -> ZeroMQ PUSH/PULL on 127.0.0.1 -> analyzer ->
   HDF5, serving live results to dashboards as the CLI does by default
   (``--no-live``: not), after the kernels are compiled for this movie.
   Frames/s over the whole call (with process start-up) and in steady state
   (first to last frame analyzed); fits/s = fits made per second
   (``StreamingAnalyzer.fits_made``); peak RSS of this process (the
   analyzer), of the source process (+ multiprocessing's helper) and of their
   sampled sum.
3. **stages**, each measured on its own pass over the same frames, from the
   outside: *decode* (iterating :class:`~plstream.acquire_adapters.TiffStackSource`);
   *transport* (frames already in memory through :func:`plstream.stream.publish`
   -> :class:`~plstream.stream.FramePublisher` -> :class:`~plstream.stream.FrameSubscriber`
   in two threads, no analysis; timed from the first frame received to the
   last, so the connection set-up is left out); the *analyzer* in-process, with
   ``time.perf_counter`` around its stage functions (``_common.ANALYZER_STAGES``);
   *write* (:class:`~plstream.analysis.ResultWriter` fed copies of the
   analyzer's last result row, with the spot table and mean image every 0.5 s
   like a session).

The stage passes run one after the other; the real pipeline overlaps the
source process (decode, encode, send) with the analyzer process (receive,
analysis, write), so end-to-end time is not their sum. Prints one table.
Run by hand::

    .venv/bin/python benchmarks/throughput.py --preset 512    # 512x512 x 2000 frames x 300 spots
    .venv/bin/python benchmarks/throughput.py --preset 2048   # 2048x2048 x 300 frames x 1000 spots
    .venv/bin/python benchmarks/throughput.py --frames 50 --size 256 --emitters 60   # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import numpy as np
import tifffile
import zmq

from plstream.acquire_adapters import Frame, TiffStackSource
from plstream.analysis import ResultWriter, StreamingAnalyzer
from plstream.analysis.session import SessionStatus
from plstream.config import Settings
from plstream.orchestration import analyze_with_source_process
from plstream.source_spec import SourceSpec
from plstream.stream import EndMessage, FrameMessage, FramePublisher, FrameSubscriber, StartMessage, publish

logger = logging.getLogger("benchmarks.throughput")

PRESETS: dict[str, tuple[int, int, int]] = {"512": (512, 2000, 300), "2048": (2048, 300, 1000)}
"""Preset name -> (frame size px, frames, emitters)."""

_TRANSPORT_POOL = 8  # distinct frames cycled through the transport pass
_SPOT_TABLE_INTERVAL_S = 0.5  # as AnalysisSession writes the spot table and mean image


@dataclass
class Pass:
    """One measured pass: ``frames`` in ``seconds`` (and ``fits`` made, where it fits spots)."""

    name: str
    frames: int
    seconds: float
    fits: int | None = None
    rss_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------- passes
def reference_pass(movie: Path) -> Pass:
    """Read every frame with ``numpy.fromfile`` and add it to a float64 sum; the time of the pass."""
    with tifffile.TiffFile(movie) as tif:
        series = tif.series[0]
        offset = series.dataoffset
        dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        shape = tuple(series.shape)
    if offset is None:
        raise ValueError(f"{movie} is not one contiguous block; the reference pass reads movies from plstream simulate")
    rows, cols = shape[-2:]
    n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    total = np.zeros((rows, cols), dtype=np.float64)
    started = time.perf_counter()
    with open(movie, "rb") as fh:
        fh.seek(offset)
        for _ in range(n):
            total += np.fromfile(fh, dtype=dtype, count=rows * cols).reshape(rows, cols)
    elapsed = time.perf_counter() - started
    logger.info("reference pass: %d frames in %.3f s (sum %.6g)", n, elapsed, total.sum())
    return Pass("reference: numpy read + float64 sum", n, elapsed)


def end_to_end_pass(
    movie: Path, settings: Settings, out: Path, *, live: bool
) -> tuple[Pass, Pass, _common.MemorySampler, dict[str, Any]]:
    """``plstream replay``'s pipeline on ``movie``: (whole call, steady state, memory, summary).

    With ``live``, live results are served as ``plstream replay`` does by default.
    """
    marks: list[tuple[float, int, int]] = []  # (time, frames analyzed, fits made)

    with _common.watch_analyzers() as watch:

        def on_tick(status: SessionStatus) -> None:
            if watch.analyzers and status.frames_analyzed and (not marks or marks[-1][1] != status.frames_analyzed):
                marks.append((time.perf_counter(), status.frames_analyzed, watch.analyzers[0].fits_made))

        with _common.MemorySampler() as memory:
            started = time.perf_counter()
            outcome = analyze_with_source_process(
                SourceSpec.file(movie), settings, out, on_tick=on_tick, **_common.live_results_kwargs(settings, live)
            )
            elapsed = time.perf_counter() - started
    if outcome.status != "complete":
        raise RuntimeError(f"the replay ended with status {outcome.status!r}: {outcome.error}")
    n = outcome.session_status.frames_analyzed
    fits = watch.analyzers[0].fits_made if watch.analyzers else None
    whole = Pass("end-to-end replay, whole call", n, elapsed, fits, memory.peak_total_kib / 1024)
    if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
        (t0, n0, f0), (t1, n1, f1) = marks[0], marks[-1]
        steady = Pass("end-to-end replay, steady state", n1 - n0, t1 - t0, f1 - f0)
    else:
        steady = Pass("end-to-end replay, steady state", 0, 0.0)
    return whole, steady, memory, outcome.summary


def decode_pass(movie: Path) -> Pass:
    """Iterate the TIFF source (what the source process does before sending)."""
    with TiffStackSource(movie) as source:
        started = time.perf_counter()
        n = 0
        for _ in source:
            n += 1
        elapsed = time.perf_counter() - started
    return Pass("decode: TiffStackSource", n, elapsed)


class _Repeated:
    """A FrameSource that yields ``n`` frames cycling through a few frames already in memory."""

    def __init__(self, frames: list[np.ndarray], n: int, description: dict[str, Any]) -> None:
        self._frames, self._n, self._description = frames, n, description

    def describe(self) -> dict[str, Any]:
        return {**self._description, "n_frames": self._n, "source": "benchmark frames in memory"}

    def __iter__(self) -> Iterator[Frame]:
        for seq in range(self._n):
            yield Frame(seq=seq, timestamp=float(seq), data=self._frames[seq % len(self._frames)], metadata={})

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def transport_pass(movie: Path, n: int, settings: Settings) -> Pass:
    """Frames in memory through publish -> PUSH -> PULL -> decode, nothing else (two threads)."""
    with TiffStackSource(movie) as source:
        description = source.describe()
        pool = [source.read(i) for i in range(min(_TRANSPORT_POOL, source.n_frames))]
    frames_source = _Repeated(pool, n, description)
    failure: list[BaseException] = []
    received = 0
    with zmq.Context() as context:
        with FrameSubscriber(
            context,
            "tcp://127.0.0.1:0",
            bind=True,
            pattern="data",
            max_frame_bytes=int(settings.stream.max_frame_mb * 2**20),
        ) as subscriber:

            def produce() -> None:
                try:
                    with FramePublisher(
                        context,
                        subscriber.endpoint,
                        bind=False,
                        send_hwm=settings.stream.send_hwm,
                        linger_ms=int(settings.stream.peer_timeout_s * 1000),
                    ) as publisher:
                        publish(frames_source, publisher, heartbeat_interval_s=settings.stream.heartbeat_interval_s)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    failure.append(exc)

            producer = threading.Thread(target=produce, name="bench-transport-source", daemon=True)
            producer.start()
            first = last = 0.0
            while True:
                message = subscriber.receive(settings.stream.peer_timeout_s)
                if message is None:
                    raise RuntimeError(
                        f"transport pass: nothing received for {settings.stream.peer_timeout_s} s "
                        f"after {received} frames"
                    )
                if isinstance(message, FrameMessage):
                    last = time.perf_counter()
                    first = first or last
                    received += 1
                elif isinstance(message, StartMessage):
                    subscriber.send_ready(message.run_uid)  # the source waits for it before its first frame
                elif isinstance(message, EndMessage):
                    subscriber.send_done(message.run_uid, received)
                    break
            producer.join()
    if failure:
        raise failure[0]
    # From the first frame received to the last: the connection set-up is not counted.
    return Pass("transport: publish -> ZeroMQ -> receive", received - 1, last - first)


@dataclass
class AnalyzerPass:
    """The in-process analyzer pass: its totals, the stage times (s), and what the write pass needs."""

    total: Pass
    stages: dict[str, float]
    last_row: Any
    spots: int


def analyzer_pass(movie: Path, settings: Settings) -> AnalyzerPass:
    """The analyzer in-process on every frame (reading the file not timed), its stages timed."""
    timer = _common.StageTimer()
    total = 0.0
    last = None
    with TiffStackSource(movie) as source, _common.instrument_analyzer(timer):
        description = source.describe()
        analyzer = StreamingAnalyzer(settings, tuple(description["shape"]), _common.camera_model_of(description))
        for frame in source:
            started = time.perf_counter()
            records = analyzer.process(frame.seq, frame.timestamp, frame.data)
            total += time.perf_counter() - started
            if records:
                last = records[-1]
        n = analyzer.frames_analyzed
        for record in analyzer.finish():
            last = record
    stages = dict(timer.totals)
    stages["other"] = max(0.0, total - sum(stages.values()))
    return AnalyzerPass(
        Pass("analyzer (in-process, all stages)", n, total, analyzer.fits_made), stages, last, len(analyzer.spots)
    )


def write_pass(
    template: Any, n_frames: int, n_spots: int, shape: tuple[int, int], settings: Settings, out: Path
) -> Pass:
    """ResultWriter fed ``n_frames`` copies of ``template`` (a real result row), spot table every 0.5 s."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(8, min(shape) - 8, size=(n_spots, 2))
    first = np.zeros(n_spots, dtype=np.int64)
    mean_image = np.full(shape, 20.0, dtype=np.float32)
    started = time.perf_counter()
    writer = ResultWriter(
        out,
        run_info={"settings_json": settings.to_json()},
        flush_interval_s=settings.output.flush_interval_s,
        overwrite=True,
        frame_shape=shape,
    )
    last_table = -np.inf
    for t in range(n_frames):
        writer.append(dataclasses.replace(template, index=t, seq=t, timestamp=float(t)))
        now = time.perf_counter()
        if now - last_table >= _SPOT_TABLE_INTERVAL_S:
            writer.set_spots(xy[:, 0], xy[:, 1], first)
            writer.set_mean_image(mean_image)
            last_table = now
    writer.close("complete", {})
    return Pass("write: ResultWriter (copies of a real row)", n_frames, time.perf_counter() - started)


# ---------------------------------------------------------------------- report
def _row(p: Pass, reference: float, indent: str = "") -> list[Any]:
    if not p.frames:
        return [indent + p.name, None, None, None, None, None]
    return [
        indent + p.name,
        f"{p.seconds / p.frames * 1e3:.3f}",
        f"{p.rate:,.1f}",
        f"{p.rate / reference:.4f}",
        f"{p.fits / p.seconds:,.0f}" if p.fits is not None else None,
        f"{p.rss_mib:,.0f}" if p.rss_mib is not None else None,
    ]


def run(
    size: int, frames: int, emitters: int, seed: int, cache: Path, settings: Settings, overrides: list[str], live: bool
) -> int:
    """Measure every pass on the movie for (``size``, ``frames``, ``emitters``, ``seed``) and print the table."""
    params = _common.simulation_params(size, frames, emitters)
    movie = _common.cached_movie(cache, params, seed)
    print("compiling / loading the analysis kernels...", file=sys.stderr, flush=True)
    with TiffStackSource(movie) as source:
        _common.warm_up(settings, source.describe(), (frame.data for frame in source))
    with tempfile.TemporaryDirectory(prefix="plstream-throughput-") as folder:
        out = Path(folder)
        print("reference pass (numpy)...", file=sys.stderr, flush=True)
        reference = min((reference_pass(movie) for _ in range(2)), key=lambda p: p.seconds)
        print("end-to-end replay...", file=sys.stderr, flush=True)
        live = bool(_common.live_results_kwargs(settings, live))
        whole, steady, memory, summary = end_to_end_pass(movie, settings, out / "replay.h5", live=live)
        print("decode, transport, analyzer and write passes...", file=sys.stderr, flush=True)
        decode = decode_pass(movie)
        transport = transport_pass(movie, frames, settings)
        analysis = analyzer_pass(movie, settings)
        if analysis.last_row is None:
            raise RuntimeError("the analyzer produced no result rows")
        write = write_pass(
            analysis.last_row, frames, analysis.last_row.n_spots, params.shape, settings, out / "write.h5"
        )

    ref = reference.rate
    rows = [
        _row(reference, ref),
        _row(whole, ref),
        _row(steady, ref),
        ["  analyzer process (this one), peak", None, None, None, None, f"{memory.peak_self_kib / 1024:,.0f}"],
        ["  source + helper processes, peaks", None, None, None, None, f"{memory.peak_children_kib / 1024:,.0f}"],
        _row(decode, ref),
        _row(transport, ref),
        _row(analysis.total, ref),
    ]
    for stage, seconds in analysis.stages.items():
        fits = analysis.total.fits if stage == "fit" else None
        rows.append(_row(Pass(stage, analysis.total.frames, seconds, fits), ref, indent="  "))
    rows.append(_row(write, ref))
    gib = movie.stat().st_size / 2**30
    title = (
        f"plstream replay throughput: {size}x{size} px x {frames} frames x {emitters} emitters "
        f"({summary.get('spots', analysis.spots)} spots found), uint16, {gib:.2f} GiB, seed {seed}, "
        f"live results {'served' if live else 'not served'}; {_common.settings_note(overrides)}\n"
        f"machine: {_common.machine_description()}\n"
    )
    notes = [
        "",
        "ratio = frames/s / reference frames/s (reference: numpy.fromfile + float64 sum per frame, page cache warm).",
        "fits/s = fits made per second (StreamingAnalyzer.fits_made: spots pre-screened as OFF are not fitted)"
        "; stages are exclusive times, 'other' = the rest of StreamingAnalyzer.process.",
        "Stage passes run one at a time; the replay overlaps the source process with the analyzer.",
        "Whole call = process start-up + analysis + closing the file"
        + (f" + serving live results {settings.live.linger_s:g} s more (live.linger_s)." if live else "."),
        "Peak RSS of the replay: sampled sum over the process tree every 0.2 s"
        + ("." if memory.self_peak_was_reset else "; analyzer peak = this process since start (VmHWM not reset)."),
    ]
    print(
        _common.format_table(
            ["pass / stage", "ms/frame", "frames/s", "ratio", "fits/s", "peak RSS MiB"], rows, title=title, notes=notes
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="512",
        help="512: 512x512 px x 2000 frames x 300 emitters; 2048: 2048x2048 px x 300 frames x 1000 "
        "emitters (default 512)",
    )
    parser.add_argument("--frames", type=int, help="number of frames (overrides the preset)")
    parser.add_argument("--size", type=int, help="frame size, px (square; overrides the preset)")
    parser.add_argument("--emitters", type=int, help="simulated emitters (overrides the preset)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=_common.DEFAULT_CACHE,
        help=f"folder for the simulated movies, reused between runs (default {_common.DEFAULT_CACHE})",
    )
    _common.add_common_arguments(parser, live_served_by="plstream replay")
    args = _common.parse_arguments(parser, argv)
    size, frames, emitters = PRESETS[args.preset]
    size = args.size or size
    frames = args.frames or frames
    emitters = args.emitters if args.emitters is not None else emitters
    if frames < 2 or size < 16 or emitters < 1:
        parser.error("need --frames >= 2, --size >= 16 and --emitters >= 1")
    settings = _common.settings_from(parser, args.overrides)
    with contextlib.suppress(KeyboardInterrupt):
        return run(size, frames, emitters, args.seed, args.cache, settings, args.overrides, live=not args.no_live)
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
