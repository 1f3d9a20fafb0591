"""plstream.stream: the frame stream between a source and its consumers, and live results.

The wire format (``docs/wire_format.md``) is defined in :mod:`.messages` and
encoded by :mod:`.wire`; :class:`FramePublisher` and :func:`publish` send a
run, :class:`FrameSubscriber` receives it, and :class:`SequenceTracker` (pure,
no sockets) accounts for every frame: which arrived, which are missing, which
were repeated. The live result protocol lets dashboards pull results from a
running analyzer (:mod:`.live`). Names are imported on first use (listed in
``__init__.pyi``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
