"""plstream.analysis: the streaming analysis of a frame stream.

Public face: :class:`StreamingAnalyzer` (one frame in, one result row out),
:class:`AnalysisSession` / :func:`run_analysis` (stream messages in, result
file out), the result file (:mod:`.result_file`: :class:`ResultWriter`,
:func:`load_results`, :class:`ResultFollower`) and :func:`evaluate` against a
simulation's ground truth. The per-stage functions live in their modules
(``detect``, ``fit``, ``drift``, ``integrate``, ``blinking``, ``camera``),
their numba kernels in :mod:`.kernels`. Names are imported on first use
(listed in ``__init__.pyi``), so importing the package compiles nothing.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
