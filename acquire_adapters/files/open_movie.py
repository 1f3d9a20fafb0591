"""Open any supported movie by its path: :func:`open_movie`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plstream.acquire_adapters.base import FrameSource, InputError
from plstream.acquire_adapters.files._tiff_io import is_tiff
from plstream.acquire_adapters.files.tiff_folder import TiffFolderSource
from plstream.acquire_adapters.files.tiff_stack import TiffStackSource
from plstream.acquire_adapters.files.video import VideoSource

__all__ = ["TIFF_SUFFIXES", "VIDEO_SUFFIXES", "open_movie"]

#: File name endings read as TIFF stacks.
TIFF_SUFFIXES = frozenset({".tif", ".tiff", ".btf"})
#: File name endings read as videos through OpenCV.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg"})

_SUPPORTED = (
    f"a multi-page TIFF (.tif, .tiff, .btf), a folder of TIFF images, or a video ({', '.join(sorted(VIDEO_SUFFIXES))})"
)


def _looks_like_video(path: Path) -> bool:
    """True when the file starts like an AVI, MP4/MOV, Matroska, MPEG or ASF container."""
    with open(path, "rb") as f:
        head = f.read(16)
    return (
        (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[4:8] == b"ftyp"
        or head[:4] in (b"\x1aE\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")
        or head[:4] == b"\x30\x26\xb2\x75"
    )


def open_movie(path: str | os.PathLike[str], **options: Any) -> FrameSource:
    """The frame source for a file or folder.

    A folder is read as a folder of TIFF images; ``.tif``/``.tiff``/``.btf``
    as a TIFF stack; ``.mp4``/``.avi``/``.mov``/``.mkv``/``.m4v``/``.wmv``/
    ``.mpg``/``.mpeg`` as a video; anything else by its first bytes (TIFF
    header, then common video containers).

    Parameters
    ----------
    path : path-like
        File or folder.
    **options
        Passed to the adapter: ``max_frame_bytes`` (all), ``pattern`` (folders).

    Raises
    ------
    InputError
        Missing path, unsupported format, or whatever the adapter refuses
        (:class:`~plstream.acquire_adapters.base.CorruptInputError` for damaged content).

    Examples
    --------
    >>> with open_movie("movie.tif") as source:  # doctest: +SKIP
    ...     print(source.describe()["n_frames"])
    """
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file or folder")
    if p.is_dir():
        return TiffFolderSource(p, **options)
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return TiffStackSource(p, **options)
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(p, **options)
    if p.is_file() and p.stat().st_size >= 4 and is_tiff(p):
        return TiffStackSource(p, **options)
    if p.is_file() and _looks_like_video(p):
        return VideoSource(p, **options)
    raise InputError(str(path), f"unsupported file type {suffix or '(no extension)'}; plstream reads {_SUPPORTED}")
