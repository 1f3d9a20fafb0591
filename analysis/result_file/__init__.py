"""The HDF5 result file: its public layout, the streaming writer, and the readers.

- :mod:`.layout`: the contract (``docs/result_layout.md``, :data:`LAYOUT_VERSION`),
  every dataset and :class:`FrameRecord`, one analyzed frame;
- :mod:`.writer`: :class:`ResultWriter`, crash-safe (SWMR) and batched;
- :mod:`.reader`: :func:`load_results` (whole file) and :class:`ResultFollower`
  (a file that is still growing).

Examples
--------
>>> from plstream.analysis.result_file import load_results
>>> results = load_results("run.h5")  # doctest: +SKIP
>>> results.intensity.shape            # doctest: +SKIP
(T, S)
"""

from plstream.analysis.result_file.errors import ResultFileLocked, ResultWriteError
from plstream.analysis.result_file.layout import LAYOUT_VERSION, FrameRecord
from plstream.analysis.result_file.reader import ResultFileError, ResultFollower, Results, load_results
from plstream.analysis.result_file.writer import ResultWriter

__all__ = [
    "LAYOUT_VERSION",
    "FrameRecord",
    "ResultFileError",
    "ResultFileLocked",
    "ResultFollower",
    "ResultWriteError",
    "ResultWriter",
    "Results",
    "load_results",
]
