"""Live cameras, one adapter per module, each a :class:`~plstream.acquire_adapters.base.FrameSource`.

:mod:`.micromanager` drives any camera Micro-Manager supports through
pymmcore-plus (optional: ``pip install 'plstream[micromanager]'``), and
:mod:`.mm_simulated` is a Micro-Manager camera, written in Python, that films
the simulated movie, so that path can be tried without hardware. A camera's
driver library is imported only when its adapter is opened; errors are
:class:`~plstream.acquire_adapters.base.CameraError` and say what to do.
"""
