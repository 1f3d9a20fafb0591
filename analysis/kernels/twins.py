"""One kernel body, compiled twice: on the calling thread and over numba's threads.

A kernel whose outer loop is a ``prange`` is written once and handed to
:func:`serial_and_parallel`, which compiles it serial (``prange`` is then
``range``) and parallel (``parallel=True``: the iterations of the ``prange``
are spread over numba's threads), each with its own on-disk cache.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from numba import njit
from numba.core.dispatcher import Dispatcher

PARALLEL_SUFFIX = "_parallel"


def serial_and_parallel(body: Callable[..., Any], **options: Any) -> tuple[Dispatcher, Dispatcher]:
    """Compile ``body`` twice with ``njit(**options)``: serial, and parallel over numba's threads.

    Parameters
    ----------
    body : function
        A plain Python function whose parallel loops are written with
        ``numba.prange``. The serial compilation runs them as ``range``, in
        order, on the calling thread; the parallel one (``parallel=True``)
        spreads their iterations over numba's threads. Results agree exactly
        when no iteration reads what another writes and nothing is reduced
        across iterations (the kernels here write disjoint blocks).
    **options
        The other ``njit`` options of both (``cache``, ``nogil``,
        ``fastmath``, ...); ``parallel`` is set here and must not be given.

    Returns
    -------
    serial, parallel : numba Dispatcher
        ``serial`` compiles ``body`` itself (same name and qualified name);
        ``parallel`` compiles a copy of it named ``<name>_parallel`` (its
        docstring says so, then repeats the body's).

    Notes
    -----
    Why a copy: numba names a function's cache files after its source file,
    ``__qualname__`` and first line (``numba.core.caching._CacheImpl``), and the
    key of an entry in them holds the signature and a hash of the bytecode,
    not the compile flags. The same function object compiled with and without
    ``parallel`` and ``cache=True`` would share one cache entry: a process
    loading from the cache would get whichever variant was written last for
    both dispatchers. The copy shares the code object (so the same bytecode,
    globals and first line) but has its own ``__qualname__``, hence its own
    cache files (``<module>.<name>_parallel-<line>.py3x.nbi``).

    Examples
    --------
    >>> from numba import prange
    >>> def double(x, out):
    ...     for i in prange(x.size):
    ...         out[i] = 2.0 * x[i]
    >>> double, double_parallel = serial_and_parallel(double, nogil=True)
    """
    if not isinstance(body, types.FunctionType):
        raise TypeError(
            f"serial_and_parallel compiles a plain Python function; got {body!r}. Remove its @njit decorator."
        )
    if "parallel" in options:
        raise ValueError("serial_and_parallel sets njit's parallel option itself; leave it out of the options")
    name = body.__name__ + PARALLEL_SUFFIX
    twin = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__, body.__closure__)
    twin.__kwdefaults__ = body.__kwdefaults__
    twin.__qualname__ = body.__qualname__ + PARALLEL_SUFFIX
    twin.__module__ = body.__module__
    twin.__doc__ = f":func:`{body.__name__}`, its ``prange`` loops spread over numba's threads.\n\n{body.__doc__ or ''}"
    return njit(**options)(body), njit(parallel=True, **options)(twin)
