"""Process hygiene: how a run stops, and what it never leaves behind.

- :func:`stop_on_signals`: Ctrl-C (SIGINT), SIGTERM and SIGHUP all ask for a
  clean stop (the frames received are written, the file is closed with status
  ``interrupted``); a second signal aborts at once.
- :func:`private_folder`: the private temporary folder of a run's IPC socket,
  ``plstream-<pid>-*`` in the system's temporary folder; removed on every exit
  path of the process, by the source process when its parent was killed, and
  otherwise by the next run (:func:`sweep_stale_folders`).
- :func:`die_with_parent`: called in a spawned source process, makes it stop
  (and finally exit) when the process that started it is gone, however it
  ended: ``PR_SET_PDEATHSIG`` on Linux, and everywhere a watchdog thread that
  notices the parent's pid change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["die_with_parent", "private_folder", "stop_on_signals", "sweep_stale_folders"]

logger = logging.getLogger(__name__)

FOLDER_PREFIX = "plstream-"
_FOLDER_NAME = re.compile(r"^plstream-(\d+)-[A-Za-z0-9_]+$")
_WATCHDOG_INTERVAL_S = 0.25


def _stop_signals() -> tuple[signal.Signals, ...]:
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event, *, also: tuple[Any, ...] = ()) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP set ``stop_event`` (and the events in ``also``): a clean stop.

    A second one raises KeyboardInterrupt (abort). Only the main thread can
    install handlers; elsewhere this does nothing. The previous handlers are
    restored afterwards.

    Parameters
    ----------
    stop_event : threading.Event
    also : tuple of events
        Set too (e.g. the source process's ``multiprocessing.Event``, so it
        starts winding down while this process finishes the file).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _stop_signals()}

    def handler(signum: int, frame: Any) -> None:
        if stop_event.is_set():
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        what = "Ctrl-C" if name == "SIGINT" else name
        logger.warning("stopping (%s): finishing the frames already received (%s again to abort)", what, what)
        stop_event.set()
        for event in also:
            event.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------- private temporary folders
def _owned_by_me(path: Path) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or path.stat().st_uid == getuid()


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would terminate it there: never sweep on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_folders(root: Path | None = None) -> list[Path]:
    """Remove the private folders (``plstream-<pid>-*``) of runs whose process is gone; returns them.

    Only this user's folders, and only when their process no longer exists:
    what a run killed together with its source process (e.g. ``kill -9`` of
    the whole process group) could not remove itself.
    """
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _FOLDER_NAME.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            if not entry.is_dir() or entry.is_symlink() or not _owned_by_me(entry) or _pid_alive(int(match.group(1))):
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
            logger.debug("removed %s, left by process %s", entry, match.group(1))
    return removed


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    """A folder only this user can use, ``<tmp>/plstream-<pid>-XXXX``, removed when the block ends.

    Stale folders of dead runs are swept first (:func:`sweep_stale_folders`).
    """
    sweep_stale_folders()
    with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as folder:
        yield Path(folder)


# ---------------------------------------------------------------------- a child that dies with its parent
def _set_parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send ``signum`` to this process when its parent dies (``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0) == 0
    except (OSError, AttributeError) as exc:
        logger.debug("prctl(PR_SET_PDEATHSIG) is not available: %s", exc)
        return False


def die_with_parent(
    parent_pid: int,
    on_parent_gone: Callable[[], None],
    *,
    grace_s: float = 3.0,
    exit_status: int = 1,
) -> threading.Thread:
    """Make this (child) process stop when ``parent_pid`` is no longer its parent.

    ``on_parent_gone`` is called once (from a signal handler or the watchdog
    thread: it must only set flags and remove files); if the process is still
    running ``grace_s`` later, it exits at once (``os._exit``): a source whose
    analyzer is gone has nothing left to deliver.

    On Linux the kernel sends SIGTERM when the parent dies (``PR_SET_PDEATHSIG``),
    so the stop starts at once; everywhere a watchdog thread checks
    ``os.getppid()`` every 0.25 s. The SIGTERM handler installed here also
    serves a plain ``kill`` of this process: a clean stop, then the same grace.
    """
    gone = threading.Event()

    def parent_gone(why: str) -> None:
        if gone.is_set():
            return
        gone.set()
        logger.debug("stopping: %s", why)
        on_parent_gone()

    def on_sigterm(signum: int, frame: Any) -> None:
        parent_gone(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_sigterm)
        _set_parent_death_signal(signal.SIGTERM)

    def watch() -> None:
        while not gone.is_set():
            if os.getppid() != parent_pid:
                parent_gone(f"the parent process {parent_pid} is gone")
                break
            gone.wait(_WATCHDOG_INTERVAL_S)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
        logger.debug("still running %.1f s after the stop: exiting", grace_s)
        os._exit(exit_status)

    thread = threading.Thread(target=watch, name="plstream-parent-watchdog", daemon=True)
    thread.start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        parent_gone(f"the parent process {parent_pid} was gone at start")
    return thread
