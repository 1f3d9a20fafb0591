"""File adapters: multi-page TIFF stacks, folders of TIFF images and videos, one per module; the frame recorder.

:func:`~plstream.acquire_adapters.files.open_movie.open_movie` picks the
adapter for a path. :class:`~plstream.acquire_adapters.files.recorder.FrameRecorder`
writes a live session's frames to an OME-TIFF that the TIFF stack adapter replays.
"""
