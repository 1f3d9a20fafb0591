"""Who owns a result file: the lock ``<result>.lock`` held while the file is written or recovered.

HDF5 itself gives no protection here: once a writer is in SWMR mode it
releases HDF5's own file lock (so that readers can open the file), and a
second writer created with ``--overwrite`` truncated the first one's file
while it was being written. :class:`ResultLock` closes that hole.

The lock is ``fcntl.flock`` on the file ``<result>.lock``, which also holds
the owner's pid, host, start time and command line (JSON) for the messages.
The kernel releases a ``flock`` when its process ends, however it ends, so a
lock file left behind by a killed process is *stale*: the next writer takes
it over. Where ``fcntl`` does not exist (Windows) the lock is the exclusive
creation of the lock file, and one left behind must be deleted by hand (the
message says so).

Examples
--------
>>> with ResultLock(Path("run.h5")):  # doctest: +SKIP
...     ...  # write run.h5; a second ResultLock(Path("run.h5")) raises ResultFileLocked
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from plstream.analysis.result_file.errors import ResultFileLocked

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ResultLock", "ensure_unlocked", "lock_owner", "lock_path"]

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_NO_LOCKING = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP (NFS, Lustre)
_ATTEMPTS = 5


def lock_path(path: Path) -> Path:
    """The lock file of the result file ``path``: ``<path>.lock`` beside it."""
    return path.with_name(path.name + LOCK_SUFFIX)


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", "replace")
        owner = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    pid, host = owner.get("pid", "?"), owner.get("host", "?")
    since = f" since {owner['since_utc']}" if owner.get("since_utc") else ""
    command = f" ({owner['command']})" if owner.get("command") else ""
    return f"process {pid} on {host}{since}{command}"


def _this_owner(purpose: str) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]
    return {"pid": os.getpid(), "host": socket.gethostname(), "since_utc": now, "purpose": purpose, "command": command}


def _pid_alive(pid: Any) -> bool:
    """Whether a process with this pid exists on this machine (True when it cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would terminate it there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _certainly_alive(owner: dict[str, Any]) -> bool:
    """The lock file names a process of this machine that is running."""
    return owner.get("host") == socket.gethostname() and _pid_alive(owner.get("pid"))


class ResultLock:
    """An exclusive claim on a result file while it is written (or recovered).

    Parameters
    ----------
    path : Path
        The result file (the lock is ``<path>.lock``).
    purpose : str
        What the holder does ("writing", "recovering"): in the lock file, for messages.

    Raises
    ------
    ResultFileLocked
        From :meth:`acquire` when another live process holds the lock; the
        message names it and what to do.
    """

    def __init__(self, path: Path, *, purpose: str = "writing") -> None:
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self._purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (a stale one left by a dead process is taken over); idempotent."""
        if self._fd is not None:
            return
        if fcntl is None:
            self._acquire_exclusive_create()
            return
        for attempt in range(_ATTEMPTS):
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                if attempt < _ATTEMPTS - 1 and not _certainly_alive(owner):
                    time.sleep(0.02)  # a probe (lock_owner) holds it this instant, or its holder is just starting
                    continue
                raise self._refusal(owner) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in _NO_LOCKING:
                    logger.warning(
                        "cannot lock %s (%s: the file system has no locks); nothing stops a second writer",
                        self.path,
                        exc.strerror,
                    )
                    return
                raise
            if not self._same_file(fd):  # the holder released (and removed) it between our open and flock
                os.close(fd)
                continue
            stale = _read_owner(fd)
            if stale:
                logger.info("took over the stale lock %s left by %s", self.lock_file, _describe(stale))
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(_this_owner(self._purpose)).encode())
            except OSError as exc:  # a full disk: the flock is the lock, the owner's name only helps messages
                logger.debug("could not write the owner into %s: %s", self.lock_file, exc)
            self._fd = fd
            return
        raise ResultFileLocked(
            f"could not lock {self.path}: {self.lock_file} keeps changing (another plstream is starting on it?)",
            path=self.path,
            owner={},
        )

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.lock_file)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _acquire_exclusive_create(self) -> None:
        """Without ``fcntl``: create the lock file exclusively; one left behind by a dead process is refused."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(self.lock_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = {}
            raise self._refusal(owner if isinstance(owner, dict) else {}, stale_hint=True) from None
        os.write(fd, json.dumps(_this_owner(self._purpose)).encode())
        self._fd = fd

    def _refusal(self, owner: dict[str, Any], *, stale_hint: bool = False) -> ResultFileLocked:
        doing = {"recovering": "recovered"}.get(str(owner.get("purpose")), "written")
        hint = (
            f"; if no plstream is running on it, delete {self.lock_file}"
            if stale_hint
            else "; wait for it to finish or stop it, or choose another --out (--overwrite does not override this)"
        )
        return ResultFileLocked(
            f"{self.path} is being {doing} by {_describe(owner)}: it holds the lock {self.lock_file}{hint}",
            path=self.path,
            owner=owner,
        )

    def release(self) -> None:
        """Give the lock up and remove the lock file; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.lock_file.unlink(missing_ok=True)  # while still held: nobody takes over a file we remove
        except OSError as exc:
            logger.debug("could not remove %s: %s", self.lock_file, exc)
        os.close(fd)

    def __enter__(self) -> ResultLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_owner(path: Path) -> dict[str, Any] | None:
    """Who holds the lock of the result file ``path`` now: the lock file's owner dict, or None (free or stale)."""
    lock_file = lock_path(Path(path))
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        owner = _read_owner(fd)
        if fcntl is None:
            return owner
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return owner or {"pid": "?", "host": "?"}
        except OSError:
            return owner if _certainly_alive(owner) else None
        return None  # nobody holds it: stale
    finally:
        os.close(fd)


def ensure_unlocked(path: Path) -> None:
    """Raise :class:`ResultFileLocked` (naming the holder) if a live process holds the lock of ``path``."""
    owner = lock_owner(path)
    if owner is not None:
        raise ResultLock(path)._refusal(owner)
