"""The dashboard's Qt side: the window, its panels and the application that runs it.

The only modules of plstream that import Qt or pyqtgraph (an import-linter
contract checks it); what they show comes from the Qt-free
:class:`~plstream.dashboard.model.DashboardModel`.
"""
