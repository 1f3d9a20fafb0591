"""``plstream`` command line: parse, configure logging, run one command, report errors.

The composition root's entry point: :func:`main` imports only the parser at
start-up (``plstream --help`` is fast); a command's module, and what it
wires together (sources, stream, analysis, dashboard), is imported when the
command runs.

Errors: the project's own error types (a wrong input, a bad setting, an
endpoint in use, ...) are one ``plstream: error: ...`` line; anything else is
a bug, reported as an internal error with the traceback saved to a log file.
``--debug`` shows every traceback.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from plstream.commands import COMMANDS
from plstream.errors import EXIT_ERROR, EXIT_INTERRUPTED, user_error_types, write_crash_log
from plstream.parser import build_parser

__all__ = ["build_parser", "entry", "main"]


_CHATTY_LIBRARIES = ("pymmcore-plus", "pymmcore_plus", "harvesters", "numba")
"""Loggers of libraries that log routine steps loudly; kept at WARNING unless --debug."""


def _configure_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="plstream: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
    if not debug:  # a library may set its own logger's level when imported: filter at our handler instead
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Let a chatty library's records through only from WARNING up."""
    return record.levelno >= logging.WARNING or not record.name.startswith(_CHATTY_LIBRARIES)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``plstream`` command line; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    _configure_logging(args.verbose, args.debug)
    module_name, function_name = COMMANDS[args.command].split(":")
    try:
        command = getattr(importlib.import_module(module_name), function_name)
        return int(command(args))
    except KeyboardInterrupt:
        print("plstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, user_error_types()):
            print(f"plstream: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        log = write_crash_log(exc, arguments)
        where = f"; the details are in {log}" if log is not None else ""
        print(
            f"plstream: internal error ({type(exc).__name__}: {exc}); this is a bug in plstream, please report "
            f"it{where} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def entry() -> None:
    """The ``plstream`` program: :func:`main`, then leave at once.

    Everything a command opened is closed by the time it returns (files,
    sockets, the source process), so the interpreter's own teardown is
    skipped: with numba loaded it takes about a second, which a Ctrl-C
    would otherwise wait for. Output and logs are flushed first.
    """
    status = main()
    gc.collect()  # runs the finalizers that release multiprocessing's semaphores (else its tracker warns)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(status)
