"""``plstream recover``: make the committed rows of a result file whose writer never closed it readable."""

from __future__ import annotations

import argparse
from pathlib import Path

from plstream.errors import EXIT_OK, UsageError

__all__ = ["recover"]


def recover(args: argparse.Namespace) -> int:
    """Check ``args.result``; recover it in place (or into ``--out``) when its writer never closed it."""
    from plstream.analysis.result_file.recover import recover_result_file

    try:
        recovery = recover_result_file(Path(args.result), out=Path(args.out) if args.out else None)
    except (FileNotFoundError, FileExistsError, IsADirectoryError) as exc:
        raise UsageError(exc.strerror or str(exc)) from None
    print(f"plstream: {recovery.describe()}")
    return EXIT_OK
