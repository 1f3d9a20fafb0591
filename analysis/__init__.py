"""plstream.analysis: numba kernels and the streaming analyzer.

Public face: :class:`StreamingAnalyzer` (one frame in, one result row out),
:class:`AnalysisSession` / :func:`run_analysis` (stream messages in, result
file out), the result file's :class:`ResultWriter` / :func:`load_results`,
and :func:`evaluate` against a simulation's ground truth. The per-stage
functions live in their modules (``detect``, ``fit``, ``drift``,
``integrate``, ``blinking``, ``camera``).
"""

from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.evaluation import Evaluation, evaluate
from plstream.analysis.pipeline import AnalysisSession, run_analysis
from plstream.analysis.results import LAYOUT_VERSION, FrameRecord, ResultWriter, load_results

__all__ = [
    "LAYOUT_VERSION",
    "AnalysisSession",
    "Evaluation",
    "FrameRecord",
    "ResultWriter",
    "StreamingAnalyzer",
    "evaluate",
    "load_results",
    "run_analysis",
]
