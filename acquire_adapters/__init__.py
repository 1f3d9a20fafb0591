"""Frame sources: the simulated camera and the file adapters, behind one small interface.

Every source implements :class:`FrameSource` (``describe()``, iteration over
:class:`Frame` objects, ``close()``) and reports unusable input as
:class:`InputError` (:class:`CorruptInputError` for damaged content).
:func:`open_movie` picks the file adapter for a path.

Rooms: :mod:`.base` (the interface), :mod:`.files` (TIFF stacks, TIFF
folders, videos, and :class:`FrameRecorder`, which records a live session's
frames for a lossless replay), :mod:`.simulated` (the simulated camera and its ground
truth). Names are imported on first use, so ``import plstream.acquire_adapters``
costs nothing until a source is needed (the public names are listed in
``__init__.pyi``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
