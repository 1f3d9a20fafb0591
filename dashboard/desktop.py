"""The desktop side of the command line: is there a screen, and opening a dashboard window.

``plstream run`` and ``plstream replay`` open the live dashboard in its own
process when a window can be shown. Nothing here imports Qt: the command
line imports this module for every run, and only the dashboard process loads Qt.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = ["dashboard_command", "display_available", "launch_dashboard"]

logger = logging.getLogger(__name__)

_HEADLESS_QT_PLATFORMS = ("offscreen", "minimal")


def display_available(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether a window can be shown.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).
    platform : str, optional
        ``sys.platform`` value (default: this machine's).

    Returns
    -------
    bool
        False when ``QT_QPA_PLATFORM`` asks Qt not to show windows (``offscreen``,
        ``minimal``); else on Linux and other Unixes True only with ``DISPLAY`` or
        ``WAYLAND_DISPLAY`` set (an X11 or Wayland session), and on macOS and
        Windows True.

    Examples
    --------
    >>> display_available({"DISPLAY": ":0"}, "linux")
    True
    >>> display_available({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux")
    False
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    qt_platform = env.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip().lower()
    if qt_platform in _HEADLESS_QT_PLATFORMS:
        return False
    if platform == "darwin" or platform.startswith(("win", "cygwin")):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def dashboard_command(endpoint: str, server_key: str | None = None, options: Sequence[str] = ()) -> list[str]:
    """The command line of a dashboard connected to the live results at ``endpoint``.

    ``server_key``: the analyzer's public key when the endpoint is encrypted;
    ``options``: more arguments (e.g. ``--set security.keys_dir=...``).
    """
    command = [sys.executable, "-m", "plstream", "dashboard", "--connect", endpoint, *options]
    return [*command, f"--server-key={server_key}"] if server_key else command


def launch_dashboard(
    endpoint: str, *, server_key: str | None = None, options: Sequence[str] = ()
) -> subprocess.Popen[bytes] | None:
    """Open a dashboard window on the live results at ``endpoint``, in its own detached process.

    ``server_key`` and ``options`` are as in :func:`dashboard_command`.

    The window stays open after this process ends. A failure to start it is
    logged as a warning that says how to start it by hand, and ``None`` is
    returned: the analysis goes on without it.
    """
    command = dashboard_command(endpoint, server_key, options)
    popen: dict[str, object] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "close_fds": True}
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
        popen["creationflags"] = flags
    else:
        popen["start_new_session"] = True  # Ctrl-C in this terminal stops the analysis, not the window
    try:
        process = subprocess.Popen(command, **popen)  # type: ignore[call-overload]
    except OSError as exc:
        logger.warning(
            "could not open the dashboard (%s); the analysis goes on. Open it with: plstream dashboard --connect %s%s",
            exc,
            endpoint,
            f" --server-key '{server_key}'" if server_key else "",
        )
        return None
    logger.info("opened the dashboard (process %d)", process.pid)
    return process
