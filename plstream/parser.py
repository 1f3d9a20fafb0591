"""The ``plstream`` argument parser: every command and flag, and nothing else.

Only :mod:`argparse` here (and the dashboard's Qt-free argument list), so
``plstream --help`` starts in a fraction of a second; the commands' code is
imported when a command runs (:mod:`plstream.commands`).
"""

from __future__ import annotations

import argparse

from plstream.commands.export import EXPORTS
from plstream.dashboard.arguments import add_arguments as add_dashboard_arguments

__all__ = ["build_parser"]


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from plstream import __version__

        parser.exit(message=f"plstream {__version__}\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings", metavar="TOML", help="settings file overriding config/default.toml (same sections)"
    )
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


def _add_security(parser: argparse.ArgumentParser, *, client: bool) -> None:
    """``--insecure`` (and, for a side that connects, ``--server-key``): see 'plstream keys --help'."""
    group = parser.add_argument_group(
        "security (endpoints other machines can reach are encrypted; set up with 'plstream keys')"
    )
    if client:
        group.add_argument(
            "--server-key",
            metavar="KEY_OR_FILE",
            help="public key of the server to connect to: its 40 characters ('plstream keys show' there), its "
            "certificate file, or the NAME of an allowed key (default: security.server_key, else the only allowed key)",
        )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="no encryption or key check on endpoints other machines can reach (a trusted network only; warns)",
    )


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


def _add_keys_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="keys folder (default: security.keys_dir, else $XDG_CONFIG_HOME/plstream/keys = ~/.config/plstream/keys)",
    )


_SOURCES = "'simulated' (the built-in simulated camera), 'genicam', 'micromanager', or a movie's path"


def _add_camera(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and set up a camera (the rest: --set camera.genicam.* / camera.micromanager.*)."""
    genicam = parser.add_argument_group("GenICam camera (source 'genicam'; pip install 'plstream[genicam]')")
    genicam.add_argument("--cti", metavar="PRODUCER.cti", help="GenTL producer of the camera's driver")
    genicam.add_argument("--device", metavar="SERIAL_OR_INDEX", help="which camera (default: the first found)")
    mm = parser.add_argument_group("Micro-Manager camera (source 'micromanager'; pip install 'plstream[micromanager]')")
    mm.add_argument("--config", dest="mm_config", metavar="MMConfig.cfg", help="Micro-Manager hardware configuration")
    mm.add_argument("--camera", dest="mm_camera", metavar="LABEL", help="camera device label (default: the core's)")
    units = parser.add_argument_group("physical units (default: from the camera or file metadata)")
    units.add_argument("--pixel-size-um", type=float, metavar="UM", help="pixel size in the sample plane, µm")
    units.add_argument("--frame-interval-s", type=float, metavar="S", help="time between frames, s")


def _add_drift(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drift-spots",
        metavar="IDS_OR_FILE",
        help="measure the drift with these particles only: spot IDs (e.g. 0,4,7) or a file of positions "
        "(the image-alignment pipeline's particle_selections.json, or 'x y' / 'x0 y0 x1 y1' per line, frame-0 px); "
        "sets drift.reference_spots",
    )


def _add_record(parser: argparse.ArgumentParser) -> None:
    record = parser.add_mutually_exclusive_group()
    record.add_argument(
        "--record",
        metavar="PATH.ome.tif",
        help="write every frame that arrives, losslessly, to this OME-TIFF (default for cameras: next to the "
        "result file; 'plstream replay' re-analyses it)",
    )
    record.add_argument("--no-record", action="store_true", help="do not record the raw frames")


def _add_output(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--out", required=required, metavar="RESULT.h5", help="result file to write (HDF5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result file")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a result (finished or still running): CSV, figures, an annotated video, the aligned movie, ...",
        description="Write files derived from a result file (a result still being written gives what was "
        "committed so far). csv: one row per spot per frame (the PL trace extractor's columns plus ours); "
        "traces: the same rows as a pickled pandas DataFrame; image: the drift-corrected mean with every spot "
        "circled and labelled; video: the movie annotated (MP4; needs --movie); fit: one spot's Gaussian fit in "
        "one frame (needs --movie, --spot, --frame); blinking: per-spot blinking figures, a summary CSV and the "
        "ensemble figure; aligned: every frame moved back into frame 0's coordinates by the inverse of its "
        "drift (translation and rotation), as a multi-page TIFF or a folder of TIFFs, plus an alignment log "
        "CSV; validation: the particles re-measured on the aligned frames, their motion before and after, the "
        "drift reduction, a CSV and PNG figures.",
    )
    p.add_argument("kind", choices=list(EXPORTS), help="what to export")
    p.add_argument("result", metavar="RESULT.h5", help="the result file")
    p.add_argument(
        "--movie",
        metavar="MOVIE",
        help="the analysed movie (video, fit; aligned, validation: default the file or folder the result replayed)",
    )
    p.add_argument(
        "--out",
        metavar="PATH",
        help="file (csv, traces, image, video, aligned .tif) or folder (fit, blinking, validation, aligned "
        "folder) to write; default: next to the result, named after it",
    )
    p.add_argument("--spot", type=int, metavar="N", help="fit: the spot ID")
    p.add_argument("--frame", type=int, metavar="M", help="fit: the frame number (the CSV's frame column)")
    p.add_argument(
        "--spots",
        metavar="LIST",
        help="blinking: the spots to draw a figure for, e.g. 0,3,7 or 0-9 (default: all; 'none' for none)",
    )
    p.add_argument(
        "--particles",
        metavar="IDS",
        help="validation: the spot IDs to follow, e.g. 0,4,7 (default: the drift's reference particles, else the "
        "brightest spots fitted in most frames)",
    )
    p.add_argument("--max-particles", type=int, default=12, help="validation: at most this many particles (default 12)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plstream",
        description=(
            "Streaming analysis of blinking single-nanoparticle PL movies: spots, sub-pixel fits, drift, "
            "intensity traces and on/off states, written to HDF5 as frames arrive."
        ),
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="main job: a camera (by default the simulated one) -> ZeroMQ -> analyzer -> HDF5, on this machine",
        description="Stream a camera through the whole pipeline and analyze it live, on this machine. With no "
        "arguments, a bounded demo with the simulated camera: its ground truth is saved next to the result and "
        "the accuracy is printed. A real camera (genicam, micromanager) runs until Ctrl-C, and its raw frames are "
        "recorded next to the result file (--no-record to skip).",
    )
    p.add_argument(
        "source",
        nargs="?",
        default="simulated",
        choices=("simulated", "genicam", "micromanager"),
        help="'simulated' (default), 'genicam' or 'micromanager'",
    )
    _add_output(p, required=False)
    _add_camera(p)
    _add_record(p)
    p.add_argument(
        "--frames", type=int, help="number of frames (simulated: default simulation.n_frames; a camera: stop after N)"
    )
    p.add_argument(
        "--frame-rate", type=float, metavar="HZ", help="camera frame rate (default: simulation.frame_rate_hz)"
    )
    p.add_argument("--unpaced", action="store_true", help="stream as fast as possible instead of at the frame rate")
    p.add_argument("--seed", type=int, help="simulation seed (default: simulation.seed)")
    _add_drift(p)
    _add_live(p, dashboard=True)
    _add_security(p, client=False)
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
    units = p.add_argument_group("physical units (default: from the file's metadata)")
    units.add_argument("--pixel-size-um", type=float, metavar="UM", help="pixel size in the sample plane, µm")
    units.add_argument("--frame-interval-s", type=float, metavar="S", help="time between frames, s")
    p.add_argument(
        "--truth", metavar="TRUTH.h5", help="ground truth to score against (default: <movie>.truth.h5 if present)"
    )
    _add_drift(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with an interrupted replay into the same --out: only the frames after its last saved one "
        "(a crashed file is recovered first; the analysis settings are those saved in the file)",
    )
    _add_live(p, dashboard=True)
    _add_security(p, client=False)
    _add_common(p)

    p = sub.add_parser(
        "acquire",
        help="the source half: stream a source to an analyzer (possibly on another machine)",
        description="Publish frames from a source. The analyzer ('plstream analyze') connects to the endpoint. "
        "Files are sent losslessly (waiting for the analyzer); a paced simulated camera behaves like a live "
        "camera and counts the frames it must drop when the analyzer falls behind.",
    )
    p.add_argument("source", nargs="?", default="simulated", help=_SOURCES + " (default: simulated)")
    _add_camera(p)
    _add_record(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--bind", metavar="ENDPOINT", help="endpoint to bind (default: stream.endpoint)")
    group.add_argument("--connect", metavar="ENDPOINT", help="connect to an analyzer that binds instead")
    p.add_argument("--monitor", metavar="ENDPOINT", help="also publish frames for viewers here (lossy PUB)")
    p.add_argument("--frames", type=int, help="number of frames (simulated camera: its length; a camera: stop after N)")
    p.add_argument("--unpaced", action="store_true", help="simulated camera: as fast as possible")
    _add_security(p, client=True)
    _add_common(p)

    p = sub.add_parser(
        "analyze",
        help="the analysis half: analyze a stream from 'plstream acquire' into a result file",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--connect", metavar="ENDPOINT", help="source endpoint to connect to (default: stream.endpoint)")
    group.add_argument("--bind", metavar="ENDPOINT", help="bind here and let the source connect")
    _add_output(p, required=True)
    _add_record(p)
    _add_drift(p)
    _add_live(p, dashboard=False)
    _add_security(p, client=True)
    _add_common(p)

    p = sub.add_parser("simulate", help="write a simulated movie (multi-page TIFF) and its ground truth")
    p.add_argument("--out", required=True, metavar="MOVIE.tif", help="TIFF to write; truth goes to MOVIE.truth.h5")
    p.add_argument("--frames", type=int, help="number of frames (default: simulation.n_frames)")
    p.add_argument(
        "--size", type=int, nargs=2, metavar=("ROWS", "COLS"), help="frame size (default: simulation.shape_px)"
    )
    p.add_argument("--emitters", type=int, help="number of emitters (default: simulation.n_emitters)")
    p.add_argument("--seed", type=int, help="random seed (default: simulation.seed)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_common(p)

    p = sub.add_parser(
        "recover",
        help="make a result file whose writer never closed it (killed, crashed, disk full) readable by any program",
        description="Check a result file; if its writer never closed it, copy the rows it had committed into a "
        "file written normally (status 'crashed'), which then replaces it (or goes to --out). A file still being "
        "written is refused; a closed file is left as it is.",
    )
    p.add_argument("result", metavar="RESULT.h5", help="the result file")
    p.add_argument("--out", metavar="COPY.h5", help="write the recovered copy here and leave RESULT.h5 untouched")
    _add_common(p)

    p = sub.add_parser("evaluate", help="score a result file against a simulation's ground truth")
    p.add_argument("result", help="result file (HDF5)")
    p.add_argument("truth", help="truth file written by 'plstream simulate' or 'plstream run'")
    p.add_argument("--check", action="store_true", help="exit with status 1 if an acceptance bar is missed")
    _add_common(p)

    _add_export(sub)

    p = sub.add_parser(
        "keys",
        help="this machine's encryption keys and the machines it admits (for endpoints others can reach)",
        description="Endpoints other machines can reach (acquire/analyze --bind/--connect, --live, --monitor on a "
        "network address) are encrypted with CURVE keys; the side that binds admits only allowed keys. On each "
        "machine: 'plstream keys init'; then give each its peer's public key: 'plstream keys allow KEY --name NAME'. "
        "Loopback and ipc endpoints need no keys.",
    )
    keys = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k = keys.add_parser("init", help="make this machine's key pair (secret key mode 0600) and print its public key")
    k.add_argument("--force", action="store_true", help="replace an existing key pair (peers must allow the new key)")
    _add_keys_dir(k)
    _add_common(k)
    k = keys.add_parser("allow", help="admit a peer: add its public key to the allowed keys")
    k.add_argument(
        "key",
        metavar="PUBLIC_KEY_OR_FILE",
        help="the peer's public key (40 characters) or its .key file; a key from another tool that starts with '-' "
        "goes after --: plstream keys allow -- KEY",
    )
    k.add_argument("--name", help="name of the key (a file NAME.key in the allowed folder; default from the file)")
    _add_keys_dir(k)
    _add_common(k)
    k = keys.add_parser("show", help="print this machine's public key and the allowed keys")
    _add_keys_dir(k)
    _add_common(k)

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
