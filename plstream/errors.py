"""What the command line reports as the user's problem, and its exit statuses.

Only the project's own error types are a user's problem (a wrong path, a bad
setting, an endpoint in use, a damaged file): they are printed as one
``plstream: error: ...`` line. Anything else is a bug in plstream and is
reported as such, with the traceback saved to a log file
(:func:`write_crash_log`).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import traceback
from pathlib import Path

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "UsageError",
    "user_error_types",
    "write_crash_log",
]

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
EXIT_INCOMPLETE = 3
"""A run that ended normally but lost frames (they never arrived, or could not be analyzed)."""


class UsageError(ValueError):
    """A command-line mistake the user can fix; the message says how."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The project's error types that mean "the input or the environment is wrong", not "plstream is wrong".

    Imported when an error is being reported (the command has loaded these
    modules by then), so that start-up stays fast.
    """
    from plstream.acquire_adapters.base import InputError
    from plstream.analysis.exports._common import ExportError
    from plstream.analysis.result_file import ResultFileError, ResultWriteError
    from plstream.config import SettingsError
    from plstream.stream import ProtocolError, StreamError
    from plstream.stream.live import LiveEndpointError, LiveProtocolError

    return (
        UsageError,
        InputError,
        SettingsError,
        StreamError,
        ProtocolError,
        LiveEndpointError,
        LiveProtocolError,
        ResultFileError,
        ResultWriteError,
        ExportError,
    )


def _log_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "plstream"


def write_crash_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Save the traceback of an unexpected error; returns the log's path (None if nothing could be written).

    The log goes to ``$XDG_STATE_HOME/plstream`` (``~/.local/state/plstream``),
    or the system's temporary folder when that cannot be written.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"plstream {_version()} crashed at {stamp}\ncommand: plstream {' '.join(argv)}\n\n" + "".join(
        traceback.format_exception(exc)
    )
    for folder in (_log_folder(), Path(tempfile.gettempdir())):
        path = folder / f"plstream-crash-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return path
    return None


def _version() -> str:
    from plstream import __version__

    return __version__
