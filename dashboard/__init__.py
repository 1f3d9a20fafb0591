"""plstream.dashboard: a live viewer for a running analyzer or a result file.

The only package that imports Qt or pyqtgraph, and only in :mod:`.views`:
the model (:class:`DashboardModel`), the feeds that fill it and the
arguments are Qt-free (import-linter checks it). Names are imported on first
use (listed in ``__init__.pyi``), so ``import plstream.dashboard`` loads no Qt.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
