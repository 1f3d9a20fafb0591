"""What several commands share: settings from the flags, the output file, the live endpoint, the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plstream.commands._security import view_command
from plstream.config import Settings, load_settings
from plstream.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, UsageError
from plstream.orchestration import AnalysisOutcome
from plstream.stream.security import Security

__all__ = [
    "check_output",
    "default_output",
    "live_endpoint",
    "live_server_key",
    "on_live_ready",
    "outcome_exit",
    "print_evaluation",
    "report",
    "settings_from",
    "tell",
    "truth_path_for",
    "wants_dashboard",
    "with_simulation_flags",
]

logger = logging.getLogger("plstream")


def settings_from(args: argparse.Namespace, *, saved_json: str | None = None) -> Settings:
    """Defaults < ``--settings`` < ``--set``, then the flags that stand for settings (camera, units, --overwrite).

    ``saved_json``: a result file's settings, in the defaults' place (to resume its analysis).
    """
    settings = load_settings(args.settings, args.overrides, saved_json=saved_json)
    if getattr(args, "overwrite", False):
        settings = settings.replace("output", overwrite=True)
    spec = getattr(args, "drift_spots", None) or settings.drift.reference_spots
    if spec:
        settings = settings.replace("drift", reference_spots=_drift_spots(spec))
    camera: dict[str, Any] = {}
    for flag, key in (("pixel_size_um", "pixel_size_um"), ("frame_interval_s", "frame_interval_s")):
        if getattr(args, flag, None) is not None:
            camera[key] = getattr(args, flag)
    genicam = {k: getattr(args, f) for f, k in (("cti", "cti"), ("device", "device")) if getattr(args, f, None)}
    if genicam:
        camera["genicam"] = dataclasses.replace(settings.camera.genicam, **genicam)
    mm = {k: getattr(args, f) for f, k in (("mm_config", "config"), ("mm_camera", "camera")) if getattr(args, f, None)}
    if mm:
        camera["micromanager"] = dataclasses.replace(settings.camera.micromanager, **mm)
    return settings.replace("camera", **camera) if camera else settings


def _drift_spots(spec: str) -> str:
    """``--drift-spots`` checked now (a usage error names the problem), a file as an absolute path."""
    from plstream.analysis.drift_references import parse_drift_references

    try:
        parse_drift_references(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_file() else spec


def default_output() -> Path:
    """``plstream-results/run-<date>-<time>.h5``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("plstream-results") / f"run-{stamp}.h5"


def check_output(path: Path, settings: Settings) -> None:
    """Make sure a result file can be created at ``path`` (creating its folder); UsageError if not."""
    from plstream.analysis.result_file.writer import check_destination

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        check_destination(path, settings.output.overwrite)
    except OSError as exc:
        raise UsageError(str(exc)) from None


def truth_path_for(result: Path) -> Path:
    """Where ``run`` saves the simulation's ground truth for ``result``."""
    return result.with_name(result.stem + ".truth.h5")


def report(outcome: AnalysisOutcome, elapsed_s: float) -> None:
    """The summary lines of a finished analysis (stdout)."""
    s = outcome.session_status
    analyzed = s.frames_analyzed - s.frames_before
    rate = analyzed / elapsed_s if elapsed_s > 0 else 0.0
    source = f" of {s.source_frames}" if s.source_frames is not None else ""
    before = f" ({s.frames_before} before the resume)" if s.frames_before else ""
    print(
        f"plstream: analyzed {s.frames_analyzed}{source} frames{before} in {elapsed_s:.1f} s ({rate:.0f} frames/s); "
        f"{s.spots} spots; {s.frames_missing} frames missing in {s.gaps} gaps; {s.frames_failed} failed"
    )
    summary = outcome.summary
    if "psf_sigma_px" in summary:
        print(f"plstream: PSF sigma {summary['psf_sigma_px']:.3f} px")
    if "polarity" in summary:
        origin = " (auto)" if summary.get("polarity_origin") == "auto" else ""
        print(f"plstream: particles {summary['polarity']}{origin}; intensities in {summary.get('units', 'photons')}")
    methods = summary.get("drift_methods") or {}
    if methods:
        words = {"reference": "reference frame", "spots": "spots", "registration": "image registration"}
        parts = [f"{words.get(k, 'not measured (kept)')} {v}" for k, v in methods.items()]
        print(f"plstream: drift from: {', '.join(parts)} frames")
    for warning in summary.get("warnings") or []:
        print(f"plstream: warning: {warning}", file=sys.stderr)
    if not outcome.output_path.exists():
        print(f"results: none written ({outcome.output_path} was not created: the analysis never started)")
        return
    losses = outcome.summary.get("losses", "")
    status = f"{outcome.status}, {losses}" if losses else outcome.status
    print(f"results: {outcome.output_path.resolve()} (status: {status})")


def print_evaluation(result_path: Path, truth_path: Path) -> list[str]:
    """Score a result against a simulation's truth, print the table; returns the missed bars."""
    from plstream.acquire_adapters import load_truth
    from plstream.analysis import evaluate, load_results

    evaluation = evaluate(load_results(result_path), load_truth(truth_path))
    print(f"accuracy against the simulation's ground truth ({truth_path.name}):")
    print(evaluation.table())
    return evaluation.failures()


def outcome_exit(outcome: AnalysisOutcome) -> int:
    """The exit status of an analysis (and its error line)."""
    if outcome.error:
        print(f"plstream: error: {outcome.error}", file=sys.stderr)
    if outcome.status == "interrupted":
        print("plstream: stopped by the user; the results written so far are complete and readable", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.status != "complete":
        return EXIT_ERROR
    if outcome.summary.get("losses"):
        print(
            f"plstream: warning: the run lost frames: {outcome.summary['losses']}; they are recorded as gaps "
            "(/stream/gaps) and the analysis of the other frames is complete",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def live_endpoint(args: argparse.Namespace, settings: Settings) -> str | None:
    """The --live endpoint, else live.endpoint; None when live results are turned off ('')."""
    endpoint = args.live if args.live is not None else settings.live.endpoint
    return endpoint or None


def on_live_ready(
    open_dashboard: bool, server_key: str | None = None, security: Security | None = None
) -> Callable[[str], None]:
    """Tell the user where the live results are; open the dashboard on them when asked to.

    ``server_key``: this machine's public key when the live endpoint is
    encrypted (a dashboard needs it, even on this machine, and uses the key
    pair of ``security``).
    """

    def ready(endpoint: str) -> None:
        encrypted = "encrypted; " if server_key else ""
        print(
            f"plstream: live results at {endpoint} ({encrypted}view with: {view_command(endpoint, server_key)})",
            file=sys.stderr,
            flush=True,
        )
        if open_dashboard:
            from plstream.dashboard.desktop import launch_dashboard

            keys = ["--set", f"security.keys_dir={security.keys_dir}"] if server_key and security else []
            launch_dashboard(endpoint, server_key=server_key, options=keys)

    return ready


def live_server_key(security: Security, endpoint: str | None) -> str | None:
    """This machine's public key when live results at ``endpoint`` will be encrypted, else None.

    Checks first that they can be (:meth:`Security.preflight`), so a missing
    key stops the command before anything starts.
    """
    if not endpoint or not security.preflight(endpoint, bind=True, role="live results"):
        return None
    return security.server_public_key().decode("ascii")


def wants_dashboard(args: argparse.Namespace) -> bool:
    """Open a dashboard window: not --headless, and a display to show it on."""
    from plstream.dashboard.desktop import display_available

    if args.headless:
        return False
    if not display_available():
        logger.info("no display (no DISPLAY / WAYLAND_DISPLAY, or QT_QPA_PLATFORM=offscreen): no dashboard window")
        return False
    return True


def tell(sentence: str) -> None:
    """What the analysis is doing, for the user (stderr)."""
    print(f"plstream: {sentence}", file=sys.stderr, flush=True)


# Command-line flags that override a [simulation] setting: flag attribute -> (setting, conversion).
_SIMULATION_FLAGS: dict[str, tuple[str, Any]] = {
    "frames": ("n_frames", int),
    "frame_rate": ("frame_rate_hz", float),
    "unpaced": ("paced", lambda unpaced: not unpaced),
    "seed": ("seed", int),
    "size": ("shape_px", tuple),
    "emitters": ("n_emitters", int),
}


def with_simulation_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Apply the simulation flags a command has and the user gave (None / False = not given)."""
    changes = {
        key: convert(getattr(args, flag))
        for flag, (key, convert) in _SIMULATION_FLAGS.items()
        if getattr(args, flag, None) not in (None, False)
    }
    return settings.replace("simulation", **changes) if changes else settings
