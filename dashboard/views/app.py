"""``plstream dashboard``: open the viewer on a live analyzer or a result file, or save a screenshot."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from plstream.dashboard.arguments import add_arguments
from plstream.dashboard.desktop import display_available
from plstream.dashboard.feeds import FileFeed, StreamFeed
from plstream.dashboard.model import DashboardModel
from plstream.stream.security import Security, default_keys_dir

if TYPE_CHECKING:  # Qt is imported only when a window is wanted
    from pyqtgraph.Qt import QtWidgets

    from plstream.dashboard.views.window import DashboardWindow

__all__ = ["main", "run_dashboard"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR = 0, 1


def run_dashboard(
    *,
    connect: str | None = None,
    result_path: str | Path | None = None,
    screenshot: str | Path | None = None,
    select: int = 3,
    timeout_s: float = 30.0,
    redraw_hz: float = 20.0,
    size: tuple[int, int] = (1600, 1000),
    security: Security | None = None,
    tab: str = "traces",
) -> int:
    """Show the dashboard for a live analyzer (``connect``) or a result file; returns an exit status.

    Parameters
    ----------
    connect : str, optional
        Live result endpoint of a running analyzer, e.g. ``tcp://127.0.0.1:5601``.
    result_path : str or Path, optional
        A result file (finished or still being written). Give exactly one of the two.
    screenshot : str or Path, optional
        Instead of showing the window: wait until the data are caught up (at
        most ``timeout_s``), select the ``select`` brightest spots, save the
        window as this PNG and return. Without a display, Qt's offscreen
        platform is used.
    select : int
        Spots preselected in screenshot mode.
    timeout_s : float
        Screenshot mode: how long to wait for the data, s.
    redraw_hz : float
        Redraw rate (capped at 30 Hz).
    size : (int, int)
        Window size in screenshot mode, px.
    security : Security, optional
        Keys for an analyzer on another machine (``--server-key``, ``--insecure``);
        without it only loopback endpoints can be reached.
    tab : {"traces", "blinking"}
        Screenshot mode: the tab shown on the right.

    Returns
    -------
    int
        0 on success; 1 when the data did not arrive in time, the source
        could not be read, or the screenshot could not be written.
    """
    if (connect is None) == (result_path is None):
        raise ValueError("give either a result file or --connect ENDPOINT (exactly one of them)")
    if not display_available() and not os.environ.get("QT_QPA_PLATFORM"):
        if screenshot is None:
            logger.error("no display (DISPLAY is not set): run on a desktop, or save a PNG with --screenshot")
            return EXIT_ERROR
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from pyqtgraph.Qt import QtWidgets  # Qt is imported only when a window is wanted

    from plstream.dashboard.views.window import DashboardWindow, configure_pyqtgraph

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["plstream-dashboard"])
    configure_pyqtgraph()
    model = DashboardModel()
    if connect is not None:  # a screenshot with a short timeout must not wait long on one request
        feed: StreamFeed | FileFeed = StreamFeed(
            connect, timeout_s=min(2.0, max(0.25, timeout_s / 4)), security=security
        )
    else:
        assert result_path is not None  # exactly one of connect and result_path was given (checked above)
        feed = FileFeed(Path(result_path))
    window = DashboardWindow(model, feed, redraw_hz=redraw_hz)
    feed.start(model)
    try:
        if screenshot is not None:
            return _screenshot(app, window, feed, Path(screenshot), select, timeout_s, size, tab)
        window.resize(*size)
        window.show()
        wall0, cpu0 = time.monotonic(), time.process_time()
        with _quit_on_signals(app):
            app.exec()
        wall = max(time.monotonic() - wall0, 1e-9)
        logger.info(
            "dashboard: %.1f redraws/s over %.0f s; %.2f s of CPU per wall second",
            window.redraw_count / wall,
            wall,
            (time.process_time() - cpu0) / wall,
        )
        return EXIT_OK
    finally:
        feed.stop()
        window.close()


@contextlib.contextmanager
def _quit_on_signals(app: QtWidgets.QApplication) -> Iterator[None]:
    """Ctrl-C and SIGTERM close the window like its close button (Qt's loop would otherwise ignore them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: app.quit())
    from pyqtgraph.Qt import QtCore

    wake = QtCore.QTimer()  # Python runs signal handlers only between bytecodes: wake it regularly
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        yield
    finally:
        wake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_caught_up(app: QtWidgets.QApplication, feed: StreamFeed | FileFeed, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if feed.caught_up.is_set():
            return True
        if feed.error is not None or not feed.running:
            return feed.caught_up.is_set()
        time.sleep(0.02)
    return False


def _screenshot(
    app: QtWidgets.QApplication,
    window: DashboardWindow,
    feed: StreamFeed | FileFeed,
    path: Path,
    select: int,
    timeout_s: float,
    size: tuple[int, int],
    tab: str = "traces",
) -> int:
    if not _wait_caught_up(app, feed, timeout_s):
        why = feed.error or f"no complete data within {timeout_s:g} s (is the analyzer running and serving results?)"
        logger.error("no screenshot of %s: %s", feed.describe(), why)
        return EXIT_ERROR
    window.resize(*size)
    window.show()
    for _ in range(3):  # let the layout settle so plots know their widths
        app.processEvents()
        time.sleep(0.02)
    window.select_brightest(select)
    if tab == "blinking":
        window.right_tabs.setCurrentIndex(1)
        window.model.blinking(wait=True)
    window.redraw(force=True)
    app.processEvents()
    window.redraw(force=True)
    app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        logger.error("could not write the screenshot %s (check the folder and the .png suffix)", path)
        return EXIT_ERROR
    logger.info("dashboard screenshot: %s", path)
    return EXIT_OK


def _route_qt_messages() -> None:
    """Send Qt's own messages to logging (the offscreen platform's size-hint notices only at DEBUG)."""
    from pyqtgraph.Qt import QtCore

    qt_logger = logging.getLogger("plstream.dashboard.qt")
    levels = {
        QtCore.QtMsgType.QtDebugMsg: logging.DEBUG,
        QtCore.QtMsgType.QtInfoMsg: logging.INFO,
        QtCore.QtMsgType.QtWarningMsg: logging.WARNING,
        QtCore.QtMsgType.QtCriticalMsg: logging.ERROR,
        QtCore.QtMsgType.QtFatalMsg: logging.CRITICAL,
    }

    def handler(kind: QtCore.QtMsgType, _context: QtCore.QMessageLogContext, message: str) -> None:
        level = logging.DEBUG if "propagateSizeHints" in message else levels.get(kind, logging.WARNING)
        qt_logger.log(level, "%s", message)

    QtCore.qInstallMessageHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m plstream.dashboard [RESULT.h5] [--connect EP] [--screenshot PNG] [--select N]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="plstream dashboard", description=__doc__))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="plstream: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    _route_qt_messages()
    return run_dashboard(
        connect=args.connect,
        result_path=args.result,
        screenshot=args.screenshot,
        select=args.select,
        timeout_s=args.timeout,
        redraw_hz=args.redraw_hz,
        security=Security(default_keys_dir(), server_key=args.server_key or "", insecure=args.insecure),
        tab=args.tab,
    )
