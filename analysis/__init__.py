"""plstream.analysis: numba kernels and the streaming analyzer.

Public face: :class:`StreamingAnalyzer` (one frame in, one result row out),
:class:`AnalysisSession` / :func:`run_analysis` (stream messages in, result
file out), the result file's :class:`ResultWriter` / :func:`load_results`,
the live history served to dashboards (:class:`LiveState`), and
:func:`evaluate` against a simulation's ground truth. The per-stage
functions live in their modules (``detect``, ``fit``, ``drift``,
``integrate``, ``blinking``, ``camera``).
"""

from plstream.analysis.analyzer import StreamingAnalyzer
from plstream.analysis.evaluation import Evaluation, evaluate
from plstream.analysis.live_state import LiveState
from plstream.analysis.pipeline import AnalysisSession, run_analysis
from plstream.analysis.results import LAYOUT_VERSION, FrameRecord, ResultFollower, ResultWriter, Results, load_results

__all__ = [
    "LAYOUT_VERSION",
    "AnalysisSession",
    "Evaluation",
    "FrameRecord",
    "LiveState",
    "ResultFollower",
    "ResultWriter",
    "Results",
    "StreamingAnalyzer",
    "evaluate",
    "load_results",
    "run_analysis",
]
