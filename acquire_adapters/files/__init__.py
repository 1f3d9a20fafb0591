"""File adapters: multi-page TIFF stacks, folders of TIFF images and videos, one per module.

:func:`~plstream.acquire_adapters.files.open_movie.open_movie` picks the
adapter for a path.
"""
