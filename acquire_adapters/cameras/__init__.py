"""Live cameras, one driver stack per module, each a :class:`~plstream.acquire_adapters.base.FrameSource`.

- :mod:`.genicam` drives GenICam cameras (GigE Vision, USB3 Vision, CoaXPress,
  Camera Link through a GenTL producer) with harvesters
  (``pip install 'plstream[genicam]'``);
- :mod:`.micromanager` drives any camera Micro-Manager supports through
  pymmcore-plus (``pip install 'plstream[micromanager]'``), and
  :mod:`.mm_simulated` is a Micro-Manager camera, written in Python, that films
  the simulated movie, so that path can be tried without hardware.

A camera's driver library is imported only when its adapter is opened, so
importing this package costs nothing. Errors are
:class:`~plstream.acquire_adapters.base.InputError` (a camera that cannot be
found or configured) or :class:`~plstream.acquire_adapters.base.CameraError`
(one that fails while running), and say what to do.
"""
