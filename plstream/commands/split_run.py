"""``plstream acquire`` and ``plstream analyze``: the source and the analysis on different machines."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import sys
import threading
import time
from pathlib import Path
from typing import Any

from plstream.commands._common import (
    check_output,
    live_endpoint,
    live_server_key,
    on_live_ready,
    outcome_exit,
    report,
    settings_from,
    tell,
    with_simulation_flags,
)
from plstream.commands._security import security_from
from plstream.config import Settings
from plstream.errors import EXIT_INTERRUPTED, EXIT_OK
from plstream.lifecycle import stop_on_signals
from plstream.orchestration import analyze_stream, publish_source
from plstream.progress import ProgressLine
from plstream.recording import RecordingPlan
from plstream.source_spec import SourceSpec

__all__ = ["acquire", "analyze"]


def acquire(args: argparse.Namespace) -> int:
    """Publish a source's frames to an analyzer (possibly on another machine)."""
    from plstream.acquire_adapters import open_movie

    settings = settings_from(args)
    if args.source == "simulated":
        settings = with_simulation_flags(settings, args)
    spec = SourceSpec.named(args.source, settings, max_frames=args.frames)
    if spec.kind == "file":  # a wrong path or a corrupt header is reported before anything binds
        with contextlib.closing(open_movie(args.source)):
            pass
    bind = args.connect is None
    endpoint = args.connect or args.bind or settings.stream.endpoint
    security = security_from(args, settings)  # keys missing or unsafe: said before a camera is opened
    encrypted = security.preflight(endpoint, bind=bind, role="data")
    monitor = args.monitor or settings.stream.monitor_endpoint or None
    if monitor:
        security.preflight(monitor, bind=True, role="monitor")
    print(
        f"plstream: streaming {args.source} {'on' if bind else 'to'} {endpoint}{' (encrypted)' if encrypted else ''}; "
        "Ctrl-C stops",
        file=sys.stderr,
    )
    stop_event = threading.Event()
    last = [0.0]

    def progress(counters: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            dropped = counters.get("dropped_queue_full", 0)
            print(
                f"plstream: sent {counters.get('frames_sent')} frames"
                + (f", dropped {dropped} (analyzer too slow)" if dropped else ""),
                file=sys.stderr,
                flush=True,
            )

    def waiting_for_analyzer(seconds: float) -> None:
        if round(seconds) % 5 == 1:
            print(f"plstream: waiting for the analyzer to be ready ({seconds:.0f} s)...", file=sys.stderr, flush=True)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with stop_on_signals(stop_event):
        counters = publish_source(
            spec,
            endpoint,
            settings,
            bind=bind,
            stop_event=stop_event,
            monitor_endpoint=monitor,
            progress=progress,
            on_waiting=waiting_for_analyzer,
            recording=_source_side_recording(settings, args),
            record_beside=Path("plstream-recordings")
            / f"{args.source if spec.is_camera else 'source'}-{stamp}.raw.ome.tif",
            security=security,
        )
    print(f"plstream: source finished: {counters}")
    return EXIT_INTERRUPTED if stop_event.is_set() else EXIT_OK


def analyze(args: argparse.Namespace) -> int:
    """Analyze a stream from ``plstream acquire`` into a result file."""
    import zmq

    from plstream.stream import FrameSubscriber

    settings = settings_from(args)
    out = Path(args.out)
    check_output(out, settings)
    bind = args.bind is not None
    endpoint = args.bind or args.connect or settings.stream.endpoint
    security = security_from(args, settings)
    encrypted = security.preflight(endpoint, bind=bind, role="data receive")
    live = live_endpoint(args, settings)
    server_key = live_server_key(security, live)
    print(
        f"plstream: analyzing the stream {'bound at' if bind else 'from'} {endpoint}"
        f"{' (encrypted)' if encrypted else ''}; Ctrl-C stops",
        file=sys.stderr,
    )
    stop_event = threading.Event()
    progress = ProgressLine()
    started = time.monotonic()
    with zmq.Context() as context, security.on(context) as secured, stop_on_signals(stop_event):
        with FrameSubscriber(
            context,
            endpoint,
            bind=bind,
            pattern="data",
            max_frame_bytes=int(settings.stream.max_frame_mb * 2**20),
            security=secured,
        ) as subscriber:
            outcome = analyze_stream(
                subscriber,
                settings,
                out,
                stop_event=stop_event,
                on_tick=progress,
                live_endpoint=live,
                on_live_ready=on_live_ready(open_dashboard=False, server_key=server_key),
                context=context,
                on_event=tell,
                recording=RecordingPlan.from_settings(settings, record=args.record, no_record=args.no_record),
                security=secured,
            )
    progress.finish(outcome.session_status)
    report(outcome, time.monotonic() - started)
    return outcome_exit(outcome)


def _source_side_recording(settings: Settings, args: argparse.Namespace) -> RecordingPlan | None:
    """Record at the source only when asked (--record, recording.enabled = true): by default the analyzer records."""
    plan = RecordingPlan.from_settings(settings, record=args.record, no_record=args.no_record)
    return plan if plan.enabled else None
