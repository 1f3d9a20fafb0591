"""What goes wrong when a result file is written: :class:`ResultWriteError` and :class:`ResultFileLocked`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ResultFileLocked", "ResultWriteError"]


class ResultWriteError(OSError):
    """Writing the result file failed (disk full, file-size limit, permission, I/O error).

    The message names the file, the dataset and the frame index; the same
    facts are in :attr:`path`, :attr:`dataset` and :attr:`frame`. Results
    committed before the failure stay readable (``plstream recover`` makes a
    copy that any HDF5 tool opens).
    """

    def __init__(self, message: str, *, path: Path, dataset: str = "", frame: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.dataset = dataset
        self.frame = frame


class ResultFileLocked(ResultWriteError):
    """Another live process holds the result file's lock (``<result>.lock``): it is writing or recovering it.

    Attributes
    ----------
    owner : dict
        What the lock file says of its holder: ``pid``, ``host``, ``since_utc``, ``command``.
    """

    def __init__(self, message: str, *, path: Path, owner: dict[str, object]) -> None:
        super().__init__(message, path=path)
        self.owner = owner
