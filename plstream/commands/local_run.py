"""``plstream run`` and ``plstream replay``: a source process on this machine, analyzed here.

Both start the frame source in a child process, analyze its stream into a
result file with a progress line, serve live results (and open the dashboard
when a display is there), report, and score the result when a simulation's
ground truth is known: :func:`_analyze_local_source` is that one sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plstream.commands._common import (
    check_output,
    default_output,
    live_endpoint,
    live_server_key,
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
from plstream.commands._security import security_from
from plstream.config import Settings
from plstream.errors import UsageError
from plstream.orchestration import analyze_with_source_process
from plstream.progress import ProgressLine
from plstream.recording import RecordingPlan
from plstream.source_spec import SourceSpec
from plstream.stream.security import Security

if TYPE_CHECKING:  # imported when a resume needs it (start-up stays fast)
    from plstream.analysis.resume import ResumePoint

__all__ = ["replay", "run"]


def _secured_live(args: argparse.Namespace, settings: Settings) -> tuple[Security, str | None]:
    """The security policy, and the key a dashboard needs when live results are encrypted.

    Called before anything starts, so missing or unsafe keys stop the command at once.
    """
    security = security_from(args, settings)
    return security, live_server_key(security, live_endpoint(args, settings))


def _analyze_local_source(
    args: argparse.Namespace,
    spec: SourceSpec,
    settings: Settings,
    out: Path,
    truth: Path | None,
    secured: tuple[Security, str | None],
    resume: ResumePoint | None = None,
) -> int:
    """Analyze the source process's stream into ``out`` (or on from ``resume``), report and score against ``truth``."""
    live = live_endpoint(args, settings)
    security, server_key = secured
    progress = ProgressLine()
    started = time.monotonic()
    outcome = analyze_with_source_process(
        spec,
        settings,
        out,
        on_tick=progress,
        live_endpoint=live,
        on_live_ready=on_live_ready(live is not None and wants_dashboard(args), server_key, security),
        security=security,
        on_event=tell,
        recording=RecordingPlan.from_settings(
            settings, record=getattr(args, "record", None), no_record=getattr(args, "no_record", False)
        ),
        resume=resume,
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
    secured = _secured_live(args, settings)
    if args.source != "simulated":
        spec = SourceSpec.named(args.source, settings, max_frames=args.frames)
        print(f"plstream: {args.source} camera; Ctrl-C stops cleanly", file=sys.stderr)
        return _analyze_local_source(args, spec, settings, out, None, secured)
    return _run_simulated(args, with_simulation_flags(settings, args), out, secured)


def _run_simulated(
    args: argparse.Namespace, settings: Settings, out: Path, secured: tuple[Security, str | None]
) -> int:
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
    status = _analyze_local_source(args, SourceSpec.simulated(settings), settings, out, truth, secured)
    print(f"truth:   {truth.resolve()}")
    return status


def replay(args: argparse.Namespace) -> int:
    """A recorded movie through the real ZeroMQ path, losslessly; scored when ``<movie>.truth.h5`` exists."""
    from plstream.acquire_adapters import open_movie

    out = Path(args.out)
    # Open the movie here first: a wrong path or a corrupt header is reported at once.
    with contextlib.closing(open_movie(args.path)) as source:
        description = source.describe()
    resume = None
    if args.resume:
        settings, resume = _resume_point(args, out, description)
    else:
        settings = settings_from(args)
        check_output(out, settings)
    truth = Path(args.truth) if args.truth else Path(args.path).with_name(Path(args.path).stem + ".truth.h5")
    if args.truth and not truth.exists():
        raise UsageError(f"truth file {truth} not found")
    secured = _secured_live(args, settings)
    n = description.get("n_frames")
    print(
        f"plstream: replaying {args.path} ({description.get('source')}, {n if n is not None else '?'} frames of "
        f"{description.get('shape')} {description.get('dtype')})",
        file=sys.stderr,
    )
    spec = SourceSpec.file(args.path, first_seq=resume.next_seq if resume is not None else 0)
    return _analyze_local_source(args, spec, settings, out, truth, secured, resume)


def _resume_point(args: argparse.Namespace, out: Path, movie: dict[str, Any]) -> tuple[Settings, ResumePoint]:
    """The settings and state to go on with the interrupted replay saved in ``out`` (recovered first if need be)."""
    import h5py

    from plstream.analysis.result_file import ResultFileError
    from plstream.analysis.result_file.recover import recover_result_file
    from plstream.analysis.resume import read_resume_point

    if not out.is_file():
        raise UsageError(f"--resume: there is no result file {out} to resume; leave out --resume to start one")
    recovery = recover_result_file(out)  # a crashed file first becomes a plain one (refused while being written)
    if recovery.recovered:
        print(f"plstream: {recovery.describe()}", file=sys.stderr)
    with h5py.File(out, "r") as f:
        saved_settings = str(f.attrs.get("settings_json", "{}"))
        saved_source = json.loads(str(f.attrs.get("source_json", "{}")) or "{}")
    for key in ("shape", "dtype", "n_frames"):
        if saved_source.get(key) != movie.get(key):
            raise UsageError(
                f"--resume: {out} was made from a movie whose {key} is {saved_source.get(key)!r}, but {args.path} "
                f"has {movie.get(key)!r}; resume it with the movie it was made from"
            )
    settings = settings_from(args, saved_json=saved_settings)  # the analysis goes on as it was set up
    try:
        point = read_resume_point(out, settings)
    except ResultFileError as exc:
        raise UsageError(f"--resume: {exc}") from None
    n = movie.get("n_frames")
    if isinstance(n, int) and point.next_seq >= n:
        raise UsageError(f"--resume: {out} already holds every frame of {args.path} up to the last ({n - 1})")
    print(f"plstream: {point.describe()}; analysis settings as saved in the file", file=sys.stderr)
    return settings, point
