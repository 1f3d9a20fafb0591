"""``plstream run`` and ``plstream replay``: a source process on this machine, analyzed here.

Both start the frame source in a child process, analyze its stream into a
result file with a progress line, serve live results (and open the dashboard
when a display is there), report, and score the result when a simulation's
ground truth is known: :func:`_analyze_local_source` is that one sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from plstream.commands._common import (
    check_output,
    default_output,
    live_endpoint,
    on_live_ready,
    outcome_exit,
    print_evaluation,
    report,
    settings_from,
    tell,
    truth_path_for,
    wants_dashboard,
    with_simulation_flags,
)
from plstream.config import Settings
from plstream.errors import UsageError
from plstream.orchestration import analyze_with_source_process
from plstream.progress import ProgressLine
from plstream.recording import RecordingPlan
from plstream.source_spec import SourceSpec

__all__ = ["replay", "run"]


def _analyze_local_source(
    args: argparse.Namespace, spec: SourceSpec, settings: Settings, out: Path, truth: Path | None
) -> int:
    """Analyze the source process's stream into ``out``, report and score against ``truth``."""
    progress = ProgressLine()
    started = time.monotonic()
    live = live_endpoint(args, settings)
    outcome = analyze_with_source_process(
        spec,
        settings,
        out,
        on_tick=progress,
        live_endpoint=live,
        on_live_ready=on_live_ready(live is not None and wants_dashboard(args)),
        on_event=tell,
        recording=RecordingPlan.from_settings(
            settings, record=getattr(args, "record", None), no_record=getattr(args, "no_record", False)
        ),
    )
    progress.finish(outcome.session_status)
    report(outcome, time.monotonic() - started)
    if truth is not None and truth.exists() and outcome.session_status.frames_analyzed:
        print_evaluation(out, truth)
    return outcome_exit(outcome)


def run(args: argparse.Namespace) -> int:
    """The main job: a camera through the whole pipeline; the simulated one is scored against its ground truth."""
    settings = settings_from(args)
    out = Path(args.out) if args.out else default_output()
    check_output(out, settings)
    if args.source != "simulated":
        spec = SourceSpec.named(args.source, settings, max_frames=args.frames)
        print(f"plstream: {args.source} camera; Ctrl-C stops cleanly", file=sys.stderr)
        return _analyze_local_source(args, spec, settings, out, None)
    return _run_simulated(args, with_simulation_flags(settings, args), out)


def _run_simulated(args: argparse.Namespace, settings: Settings, out: Path) -> int:
    from plstream.acquire_adapters import SimulatedCamera, save_truth
    from plstream.source_spec import simulation_params

    sim = settings.simulation
    truth = truth_path_for(out)
    if truth.exists() and not settings.output.overwrite:  # never replace an earlier run's ground truth silently
        raise UsageError(
            f"{truth} already exists (the ground truth of an earlier run); choose another --out or pass --overwrite"
        )
    save_truth(SimulatedCamera(simulation_params(sim), seed=sim.seed).truth, truth)
    pacing = f"at {sim.frame_rate_hz:g} frames/s" if sim.paced else "as fast as possible"
    print(
        f"plstream: simulated camera {sim.shape_px[0]}x{sim.shape_px[1]} px, {sim.n_emitters} blinking emitters, "
        f"{sim.n_frames} frames {pacing}; Ctrl-C stops cleanly",
        file=sys.stderr,
    )
    status = _analyze_local_source(args, SourceSpec.simulated(settings), settings, out, truth)
    print(f"truth:   {truth.resolve()}")
    return status


def replay(args: argparse.Namespace) -> int:
    """A recorded movie through the real ZeroMQ path, losslessly; scored when ``<movie>.truth.h5`` exists."""
    from plstream.acquire_adapters import open_movie

    settings = settings_from(args)
    out = Path(args.out)
    # Open the movie here first: a wrong path or a corrupt header is reported at once.
    with contextlib.closing(open_movie(args.path)) as source:
        description = source.describe()
    check_output(out, settings)
    truth = Path(args.truth) if args.truth else Path(args.path).with_name(Path(args.path).stem + ".truth.h5")
    if args.truth and not truth.exists():
        raise UsageError(f"truth file {truth} not found")
    n = description.get("n_frames")
    print(
        f"plstream: replaying {args.path} ({description.get('source')}, {n if n is not None else '?'} frames of "
        f"{description.get('shape')} {description.get('dtype')})",
        file=sys.stderr,
    )
    return _analyze_local_source(args, SourceSpec.file(args.path), settings, out, truth)
