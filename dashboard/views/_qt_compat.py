"""Work-around for a Qt binding that drops references to None, True and False; detected, never assumed.

The PySide6 6.12.0 wheel installed here, on CPython 3.11, returns ``None``
from every void method (``QPainter.scale``, ``QObject.setObjectName``, ...)
and ``True`` from ``SignalInstance.emit()`` without taking a reference, as if
those objects were immortal (they are only from Python 3.12 on). Each call
drops one reference; pyqtgraph makes thousands per redraw, so within minutes
the count reaches zero and the interpreter aborts ("Fatal Python error:
none_dealloc" or "bool_dealloc").

:func:`refcount_guard` probes for the defect once. Only if it is present does
it return a function that keeps the affected singletons' counts far from zero
(the window calls it on every timer tick); on a sound binding, or Python
>= 3.12, it returns None and nothing is done. The real fix is another
PySide6 version or Python >= 3.12.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import sys
from collections.abc import Callable

from pyqtgraph.Qt import QT_LIB, QtCore

__all__ = ["refcount_guard"]

logger = logging.getLogger(__name__)

_FLOOR = 10_000_000
_TOP_UP = 1_000_000_000


class _Probe(QtCore.QObject):
    fired = QtCore.Signal()


def _leaking_singletons(n: int = 32) -> list[object]:
    """The singletons whose reference count falls while calling void Qt methods and emitting signals."""
    probe = _Probe()
    singletons = (None, True, False)
    before = [sys.getrefcount(obj) for obj in singletons]
    for _ in range(n):
        probe.setObjectName("probe")  # a void method
        probe.fired.emit()
    after = [sys.getrefcount(obj) for obj in singletons]
    return [obj for obj, b, a in zip(singletons, before, after) if a <= b - n // 2]


def _top_up(singletons: tuple[object, ...]) -> None:
    for obj in singletons:
        if sys.getrefcount(obj) < _FLOOR:
            # ob_refcnt is the first field of every CPython object; these objects are never freed anyway.
            ctypes.c_ssize_t.from_address(id(obj)).value += _TOP_UP


@functools.cache
def refcount_guard() -> Callable[[], None] | None:
    """A function to call on every redraw if this Qt binding leaks singleton references, else None.

    Probed once per process.
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return None
    leaking = tuple(_leaking_singletons())
    if not leaking:
        return None
    logger.warning(
        "this Qt binding (%s %s) drops references to %s at every call on Python %d.%d; the dashboard "
        "compensates. Use Python >= 3.12 or another %s version to avoid the work-around.",
        QT_LIB,
        getattr(importlib.import_module(QT_LIB), "__version__", "?"),
        ", ".join(repr(obj) for obj in leaking),
        sys.version_info.major,
        sys.version_info.minor,
        QT_LIB,
    )
    guard = functools.partial(_top_up, leaking)
    guard()
    return guard
