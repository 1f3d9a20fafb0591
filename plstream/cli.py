"""``plstream`` command line: the only place that wires sources, stream and analysis together."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import zmq

from plstream import __version__
from plstream.acquire_adapters import SimulatedCamera, load_truth, open_source, save_truth, write_movie
from plstream.acquire_adapters.base import InputError
from plstream.analysis.evaluation import evaluate
from plstream.analysis.results import load_results
from plstream.analysis.warmup import compile_kernels
from plstream.config import Settings, SettingsError, load_settings
from plstream.dashboard.app import add_arguments as add_dashboard_arguments, run_dashboard
from plstream.dashboard.desktop import display_available, launch_dashboard
from plstream.orchestration import (
    AnalysisOutcome,
    analyze_stream,
    analyze_with_source_process,
    publish_source,
    stop_on_sigint,
)
from plstream.progress import ProgressLine
from plstream.sources import SourceSpec, simulation_params
from plstream.stream import FrameSubscriber, StreamError, is_loopback

__all__ = ["main", "build_parser"]

logger = logging.getLogger("plstream")

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class UsageError(ValueError):
    """A command-line mistake the user can fix."""


# ---------------------------------------------------------------------- parser
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="TOML", help="settings file overriding config/default.toml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set detection.threshold_sigma=6 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the analysis decides (INFO)")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")


def _add_live(parser: argparse.ArgumentParser, *, dashboard: bool) -> None:
    parser.add_argument(
        "--live",
        metavar="ENDPOINT",
        help="serve live results to dashboards here, e.g. tcp://127.0.0.1:5560 (default: live.endpoint, "
        "a free port on this machine; '' serves nothing); view with 'plstream dashboard --connect ENDPOINT'",
    )
    if dashboard:
        parser.add_argument(
            "--headless",
            action="store_true",
            help="do not open the dashboard window (it opens when a display is available); "
            "live results are still served (see --live)",
        )


def _add_output(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--out", required=required, metavar="RESULT.h5", help="result file to write (HDF5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plstream",
        description=(
            "Streaming analysis of blinking single-nanoparticle PL movies: spots, sub-pixel fits, drift, "
            "intensity traces and on/off states, written to HDF5 as frames arrive."
        ),
    )
    parser.add_argument("--version", action="version", version=f"plstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="main job: simulated camera -> ZeroMQ -> analyzer -> HDF5 (a bounded demo with no arguments)",
        description="Stream the simulated camera through the whole pipeline and analyze it live. "
        "The simulator's ground truth is saved next to the result and the accuracy is printed.",
    )
    _add_output(p, required=False)
    p.add_argument("--frames", type=int, help="number of frames (default: simulation.n_frames)")
    p.add_argument("--frame-rate", type=float, metavar="HZ", help="camera frame rate (default: simulation.frame_rate_hz)")
    p.add_argument("--unpaced", action="store_true", help="stream as fast as possible instead of at the frame rate")
    p.add_argument("--seed", type=int, help="simulation seed (default: simulation.seed)")
    _add_live(p, dashboard=True)
    _add_common(p)

    p = sub.add_parser(
        "replay",
        help="replay a TIFF stack, TIFF folder or video through the real ZeroMQ path into a result file",
        description="Replay a recorded movie as a stream (source and analyzer in separate processes, "
        "lossless: the source waits for the analyzer). If <movie>.truth.h5 exists (a simulated movie), "
        "the accuracy against it is printed.",
    )
    p.add_argument("path", help="TIFF stack, folder of TIFF images, or video file (MP4/AVI/...)")
    _add_output(p, required=True)
    p.add_argument("--truth", metavar="TRUTH.h5", help="ground truth to score against (default: <movie>.truth.h5 if present)")
    _add_live(p, dashboard=True)
    _add_common(p)

    p = sub.add_parser(
        "acquire",
        help="the source half: stream a source to an analyzer (possibly on another machine)",
        description="Publish frames from a source. The analyzer ('plstream analyze') connects to the endpoint. "
        "Files are sent losslessly (waiting for the analyzer); a paced simulated camera behaves like a live "
        "camera and counts the frames it must drop when the analyzer falls behind.",
    )
    p.add_argument("source", nargs="?", default="simulated", help="'simulated' (default) or a movie path")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--bind", metavar="ENDPOINT", help="endpoint to bind (default: stream.endpoint)")
    group.add_argument("--connect", metavar="ENDPOINT", help="connect to an analyzer that binds instead")
    p.add_argument("--monitor", metavar="ENDPOINT", help="also publish frames for viewers here (lossy PUB)")
    p.add_argument("--frames", type=int, help="simulated camera: number of frames")
    p.add_argument("--unpaced", action="store_true", help="simulated camera: as fast as possible")
    _add_common(p)

    p = sub.add_parser(
        "analyze",
        help="the analysis half: analyze a stream from 'plstream acquire' into a result file",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--connect", metavar="ENDPOINT", help="source endpoint to connect to (default: stream.endpoint)")
    group.add_argument("--bind", metavar="ENDPOINT", help="bind here and let the source connect")
    _add_output(p, required=True)
    _add_live(p, dashboard=False)
    _add_common(p)

    p = sub.add_parser("simulate", help="write a simulated movie (multi-page TIFF) and its ground truth")
    p.add_argument("--out", required=True, metavar="MOVIE.tif", help="TIFF to write; truth goes to MOVIE.truth.h5")
    p.add_argument("--frames", type=int, help="number of frames (default: simulation.n_frames)")
    p.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"), help="frame size (default: simulation.shape_px)")
    p.add_argument("--emitters", type=int, help="number of emitters (default: simulation.n_emitters)")
    p.add_argument("--seed", type=int, help="random seed (default: simulation.seed)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_common(p)

    p = sub.add_parser("evaluate", help="score a result file against a simulation's ground truth")
    p.add_argument("result", help="result file (HDF5)")
    p.add_argument("truth", help="truth file written by 'plstream simulate' or 'plstream run'")
    p.add_argument("--check", action="store_true", help="exit with status 1 if an acceptance bar is missed")
    _add_common(p)

    p = sub.add_parser(
        "dashboard",
        help="watch a running analysis live (--connect) or look at a result file",
        description="Open the dashboard window on the live results of a running analysis (the endpoint "
        "'plstream run', 'replay' and 'analyze' print) or on a result file. Give exactly one of RESULT.h5 "
        "and --connect.",
    )
    add_dashboard_arguments(p)
    _add_common(p)
    return parser


# ---------------------------------------------------------------------- helpers
def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="plstream: %(levelname)s: %(message)s", stream=sys.stderr, force=True)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, args.overrides)
    if getattr(args, "overwrite", False):
        settings = settings.replace("output", overwrite=True)
    return settings


def _default_output() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("plstream-results") / f"run-{stamp}.h5"


def _check_output(path: Path, settings: Settings) -> None:
    if path.exists() and not settings.output.overwrite:
        raise UsageError(f"{path} already exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)


def _truth_path_for(result: Path) -> Path:
    return result.with_name(result.stem + ".truth.h5")


def _report(outcome: AnalysisOutcome, elapsed_s: float) -> None:
    s = outcome.session_status
    rate = s.frames_analyzed / elapsed_s if elapsed_s > 0 else 0.0
    source = f" of {s.source_frames}" if s.source_frames is not None else ""
    print(
        f"plstream: analyzed {s.frames_analyzed}{source} frames in {elapsed_s:.1f} s ({rate:.0f} frames/s); "
        f"{s.spots} spots; {s.frames_missing} frames missing in {s.gaps} gaps; {s.frames_failed} failed"
    )
    if "psf_sigma_px" in outcome.summary:
        print(f"plstream: PSF sigma {outcome.summary['psf_sigma_px']:.3f} px")
    print(f"results: {outcome.output_path.resolve()} (status: {outcome.status})")


def _print_evaluation(result_path: Path, truth_path: Path) -> list[str]:
    results = load_results(result_path)
    evaluation = evaluate(results, load_truth(truth_path))
    print(f"accuracy against the simulation's ground truth ({truth_path.name}):")
    print(evaluation.table())
    return evaluation.failures()


def _outcome_exit(outcome: AnalysisOutcome) -> int:
    if outcome.error:
        print(f"plstream: error: {outcome.error}", file=sys.stderr)
    if outcome.status == "interrupted":
        print("plstream: stopped by the user; the results written so far are complete and readable", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.status == "complete" else EXIT_ERROR


def _live_endpoint(args: argparse.Namespace, settings: Settings) -> str | None:
    """The --live endpoint, else live.endpoint; None when live results are turned off ('')."""
    endpoint = args.live if args.live is not None else settings.live.endpoint
    return endpoint or None


def _on_live_ready(open_dashboard: bool) -> Callable[[str], None]:
    """Tell the user where the live results are; open the dashboard on them when asked to."""

    def ready(endpoint: str) -> None:
        print(
            f"plstream: live results at {endpoint} (view with: plstream dashboard --connect {endpoint})",
            file=sys.stderr,
            flush=True,
        )
        if open_dashboard:
            launch_dashboard(endpoint)

    return ready


def _wants_dashboard(args: argparse.Namespace) -> bool:
    """Open a dashboard window: not --headless, and a display to show it on."""
    if args.headless:
        return False
    if not display_available():
        logger.info("no display (no DISPLAY / WAYLAND_DISPLAY, or QT_QPA_PLATFORM=offscreen): no dashboard window")
        return False
    return True


def _warm_up() -> None:
    started = time.monotonic()
    print("plstream: preparing the analysis kernels (compiled once, then cached)...", file=sys.stderr)
    compile_kernels()
    logger.info("kernels ready in %.1f s", time.monotonic() - started)


# Command-line flags that override a [simulation] setting: flag attribute -> (setting, conversion).
_SIMULATION_FLAGS: dict[str, tuple[str, Any]] = {
    "frames": ("n_frames", int),
    "frame_rate": ("frame_rate_hz", float),
    "unpaced": ("paced", lambda unpaced: not unpaced),
    "seed": ("seed", int),
    "size": ("shape_px", tuple),
    "emitters": ("n_emitters", int),
}


def _with_simulation_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Apply the simulation flags a command has and the user gave (None / False = not given)."""
    changes = {
        key: convert(getattr(args, flag))
        for flag, (key, convert) in _SIMULATION_FLAGS.items()
        if getattr(args, flag, None) not in (None, False)
    }
    return settings.replace("simulation", **changes) if changes else settings


# ---------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    settings = _with_simulation_flags(_settings(args), args)
    sim = settings.simulation
    out = Path(args.out) if args.out else _default_output()
    _check_output(out, settings)
    truth_path = _truth_path_for(out)
    save_truth(SimulatedCamera(simulation_params(sim), seed=sim.seed).truth, truth_path)
    _warm_up()
    pacing = f"at {sim.frame_rate_hz:g} frames/s" if sim.paced else "as fast as possible"
    print(
        f"plstream: simulated camera {sim.shape_px[0]}x{sim.shape_px[1]} px, {sim.n_emitters} blinking emitters, "
        f"{sim.n_frames} frames {pacing}; Ctrl-C stops cleanly",
        file=sys.stderr,
    )
    progress = ProgressLine()
    started = time.monotonic()
    live = _live_endpoint(args, settings)
    outcome = analyze_with_source_process(
        SourceSpec.simulated(settings),
        settings,
        out,
        on_tick=progress,
        live_endpoint=live,
        on_live_ready=_on_live_ready(live is not None and _wants_dashboard(args)),
    )
    progress.finish(outcome.session_status)
    _report(outcome, time.monotonic() - started)
    if outcome.session_status.frames_analyzed:
        _print_evaluation(out, truth_path)
    print(f"truth:   {truth_path.resolve()}")
    return _outcome_exit(outcome)


def _cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out = Path(args.out)
    # Open the movie here first: a wrong path or a corrupt header is reported at once.
    with contextlib.closing(open_source(args.path)) as source:
        description = source.describe()
    _check_output(out, settings)
    truth = Path(args.truth) if args.truth else Path(args.path).with_name(Path(args.path).stem + ".truth.h5")
    if args.truth and not truth.exists():
        raise UsageError(f"truth file {truth} not found")
    n = description.get("n_frames")
    print(
        f"plstream: replaying {args.path} ({description.get('source')}, {n if n is not None else '?'} frames of "
        f"{description.get('shape')} {description.get('dtype')})",
        file=sys.stderr,
    )
    _warm_up()
    progress = ProgressLine()
    started = time.monotonic()
    live = _live_endpoint(args, settings)
    outcome = analyze_with_source_process(
        SourceSpec.file(args.path),
        settings,
        out,
        on_tick=progress,
        live_endpoint=live,
        on_live_ready=_on_live_ready(live is not None and _wants_dashboard(args)),
    )
    progress.finish(outcome.session_status)
    _report(outcome, time.monotonic() - started)
    if truth.exists() and outcome.session_status.frames_analyzed:
        _print_evaluation(out, truth)
    return _outcome_exit(outcome)


def _cmd_acquire(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.source == "simulated":
        settings = _with_simulation_flags(settings, args)
        spec = SourceSpec.simulated(settings)
    else:
        with contextlib.closing(open_source(args.source)):
            pass
        spec = SourceSpec.file(args.source)
    bind = args.connect is None
    endpoint = args.connect or args.bind or settings.stream.endpoint
    if bind and not is_loopback(endpoint):
        logger.warning("binding %s: frames are sent unencrypted to anyone who connects", endpoint)
    print(f"plstream: streaming {args.source} {'on' if bind else 'to'} {endpoint}; Ctrl-C stops", file=sys.stderr)
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

    with stop_on_sigint(stop_event):
        counters = publish_source(
            spec, endpoint, settings, bind=bind, stop_event=stop_event, monitor_endpoint=args.monitor, progress=progress
        )
    print(f"plstream: source finished: {counters}")
    return EXIT_INTERRUPTED if stop_event.is_set() else EXIT_OK


def _cmd_analyze(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out = Path(args.out)
    _check_output(out, settings)
    bind = args.bind is not None
    endpoint = args.bind or args.connect or settings.stream.endpoint
    _warm_up()
    print(f"plstream: analyzing the stream {'bound at' if bind else 'from'} {endpoint}; Ctrl-C stops", file=sys.stderr)
    stop_event = threading.Event()
    progress = ProgressLine()
    started = time.monotonic()
    with zmq.Context() as context, stop_on_sigint(stop_event):
        with FrameSubscriber(
            context, endpoint, bind=bind, pattern="pull", max_frame_bytes=int(settings.stream.max_frame_mb * 2**20)
        ) as subscriber:
            outcome = analyze_stream(
                subscriber,
                settings,
                out,
                stop_event=stop_event,
                on_tick=progress,
                live_endpoint=_live_endpoint(args, settings),
                on_live_ready=_on_live_ready(open_dashboard=False),
                context=context,
            )
    progress.finish(outcome.session_status)
    _report(outcome, time.monotonic() - started)
    return _outcome_exit(outcome)


def _cmd_simulate(args: argparse.Namespace) -> int:
    sim = _with_simulation_flags(_settings(args), args).simulation
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    progress_every = max(1, sim.n_frames // 20)

    def progress(done: int, total: int) -> None:
        if done % progress_every == 0 or done == total:
            print(f"\rplstream: simulated {done}/{total} frames", end="", file=sys.stderr, flush=True)

    truth_path = write_movie(out, simulation_params(sim), seed=sim.seed, progress=progress)
    print(file=sys.stderr)
    print(f"movie: {out.resolve()}\ntruth: {Path(truth_path).resolve()}")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    failures = _print_evaluation(Path(args.result), Path(args.truth))
    if failures:
        print("missed acceptance bars: " + "; ".join(failures))
        return EXIT_ERROR if args.check else EXIT_OK
    print("all acceptance bars met")
    return EXIT_OK


def _dashboard_import_problem(exc: ImportError) -> str:
    """What to tell a user whose dashboard cannot be imported, and how to fix it."""
    missing = (exc.name or "").split(".")[0]
    install = f"{sys.executable} -m pip install 'PySide6-Essentials>=6.6' 'pyqtgraph>=0.13.7'"
    if missing in ("PySide6", "shiboken6", "pyqtgraph"):
        return f"the dashboard needs {missing}, which is not installed; install it with: {install}"
    if missing == "plstream":
        return f"this plstream installation has no dashboard ({exc}); reinstall plstream"
    return (
        f"the dashboard cannot load Qt ({exc}); reinstall it with: {install} --force-reinstall "
        "(on Linux the system also needs the OpenGL/EGL and xcb libraries, e.g. libegl1 and libxcb-cursor0)"
    )


def _cmd_dashboard(args: argparse.Namespace) -> int:
    if args.select < 0:
        raise UsageError(f"--select {args.select}: give the number of spots to preselect, 0 or more")
    if args.result is not None and not Path(args.result).exists():
        raise UsageError(f"result file {args.result} not found; give the path of an .h5 file written by plstream")
    try:  # Qt is imported when the window is made
        return run_dashboard(
            connect=args.connect,
            result_path=args.result,
            screenshot=args.screenshot,
            select=args.select,
            timeout_s=args.timeout,
            redraw_hz=args.redraw_hz,
        )
    except ImportError as exc:
        if args.debug:
            raise
        print(f"plstream: error: {_dashboard_import_problem(exc)}", file=sys.stderr)
        return EXIT_ERROR


_COMMANDS = {
    "run": _cmd_run,
    "replay": _cmd_replay,
    "acquire": _cmd_acquire,
    "analyze": _cmd_analyze,
    "simulate": _cmd_simulate,
    "evaluate": _cmd_evaluate,
    "dashboard": _cmd_dashboard,
}

# Errors that are the user's input or environment, reported as one line (tracebacks with --debug).
_USER_ERRORS = (InputError, SettingsError, StreamError, UsageError, FileExistsError, FileNotFoundError, PermissionError, OSError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``plstream`` command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("plstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"plstream: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
