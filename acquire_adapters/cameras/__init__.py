"""Real cameras, one driver stack per module.

:mod:`.genicam` drives GenICam cameras (GigE Vision, USB3 Vision, CoaXPress,
Camera Link through a GenTL producer) with harvesters. Each driver stack is an
optional extra (``pip install 'plstream[genicam]'``): its module imports the
driver only when a camera is opened, so importing this package costs nothing.
"""
