"""``plstream dashboard``: the viewer on a live analysis or a result file (Qt is imported here, on demand)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plstream.commands._security import security_from
from plstream.config import load_settings
from plstream.errors import EXIT_ERROR, UsageError

__all__ = ["dashboard"]


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


def dashboard(args: argparse.Namespace) -> int:
    """Open the dashboard window (or save a screenshot of it)."""
    if args.select < 0:
        raise UsageError(f"--select {args.select}: give the number of spots to preselect, 0 or more")
    if args.result is not None and not Path(args.result).exists():
        raise UsageError(f"result file {args.result} not found; give the path of an .h5 file written by plstream")
    security = security_from(args, load_settings(args.settings, args.overrides))
    if args.connect is not None:  # keys missing or unsafe: said before a window opens
        security.preflight(args.connect, bind=False, role="live results")
    try:  # Qt is imported when the window is made
        from plstream.dashboard.views.app import run_dashboard

        return run_dashboard(
            connect=args.connect,
            result_path=args.result,
            screenshot=args.screenshot,
            select=args.select,
            timeout_s=args.timeout,
            redraw_hz=args.redraw_hz,
            security=security,
            tab=args.tab,
        )
    except ImportError as exc:
        if args.debug:
            raise
        print(f"plstream: error: {_dashboard_import_problem(exc)}", file=sys.stderr)
        return EXIT_ERROR
