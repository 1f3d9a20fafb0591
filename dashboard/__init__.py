"""plstream.dashboard: a live viewer for a running analyzer or a result file.

The only package that imports Qt or pyqtgraph, and only in its view modules:
``import plstream.dashboard`` (and its model and feeds) stays Qt-free; the Qt
names (:class:`DashboardWindow`, :func:`run_dashboard`, :func:`main`) are
imported on first use.
"""

from __future__ import annotations

from typing import Any

from plstream.dashboard.feeds import FileFeed, StreamFeed, results_to_update
from plstream.dashboard.model import DashboardModel, SpotMetrics, TraceData

__all__ = [
    "DashboardModel",
    "DashboardWindow",
    "FileFeed",
    "SpotMetrics",
    "StreamFeed",
    "TraceData",
    "main",
    "results_to_update",
    "run_dashboard",
]

_LAZY = {"DashboardWindow": "plstream.dashboard.window", "run_dashboard": "plstream.dashboard.app", "main": "plstream.dashboard.app"}


def __getattr__(name: str) -> Any:
    """Import the Qt-side names only when asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plstream.dashboard' has no attribute {name!r}")
