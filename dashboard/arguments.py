"""The dashboard's command-line arguments, shared by ``plstream dashboard`` and ``python -m plstream.dashboard``.

Kept apart from the Qt application (:mod:`plstream.dashboard.views.app`) so
that building the ``plstream`` parser imports no Qt.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dashboard's arguments to ``parser`` (used by ``plstream dashboard`` and ``python -m``)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("result", nargs="?", metavar="RESULT.h5", help="result file to open (finished or growing)")
    source.add_argument(
        "--connect", metavar="ENDPOINT", help="live results of a running analysis, e.g. tcp://127.0.0.1:5560"
    )
    parser.add_argument("--screenshot", metavar="PNG", help="save the window as a PNG once caught up, then exit")
    parser.add_argument(
        "--select", type=int, default=3, metavar="N", help="screenshot: preselect the N brightest spots (default 3)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="screenshot: wait at most S seconds")
    parser.add_argument(
        "--tab", choices=("traces", "blinking"), default="traces", help="screenshot: the tab to show (default traces)"
    )
    parser.add_argument("--redraw-hz", type=float, default=20.0, metavar="HZ", help="redraw rate (at most 30)")
    security = parser.add_argument_group("security (an analyzer on another machine; set up with 'plstream keys')")
    security.add_argument(
        "--server-key",
        metavar="KEY_OR_FILE",
        help="the analyzer's public key: 40 characters, a certificate file or the NAME of an allowed key (default: "
        "security.server_key, else the only allowed key); also encrypts a loopback endpoint (an SSH tunnel, or an "
        "analyzer here that binds all interfaces)",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="connect to an analyzer on another machine without encryption (one started with --insecure)",
    )
    return parser
