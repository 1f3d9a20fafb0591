"""Frames from a folder of single-image TIFF files, in natural order.

``img2.tif`` comes before ``img10.tif`` (:func:`natural_key`). Hidden files
(names starting with ``.``, e.g. macOS ``._img1.tif``) are skipped, and the
pattern is matched case-insensitively. Every image must have the first
image's shape and dtype. One file is read per frame, when it is asked for.

Errors at open: missing folder, no matching file, a first image that is not a
readable single 2-D image. Errors while iterating: a file that is not a TIFF
(InputError), is damaged (CorruptInputError naming the file), holds more
than one image or differs in shape or dtype from the first (InputError naming
the file and both shapes). Colour images become grey as in
:mod:`~plstream.acquire_adapters.files.tiff_stack`.

Timestamps are the time each frame was read (the folder states no frame
rate; ``frame_rate_hz`` is None).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plstream.acquire_adapters.base import CorruptInputError, Frame, InputError
from plstream.acquire_adapters.files._tiff_io import (
    check_frame,
    check_layout,
    frame_layout,
    open_tiff,
    tifffile_problems,
    to_grey,
)

__all__ = ["TiffFolderSource", "natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``img2`` < ``img10``; letters compare case-insensitively."""
    parts = _DIGITS.split(name)
    return (*tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)), name)


class TiffFolderSource:
    """A folder of single-image TIFFs as a :class:`~plstream.acquire_adapters.base.FrameSource`.

    Parameters
    ----------
    folder : path-like
        The folder.
    pattern : str
        Shell pattern the file names must match (case-insensitive).
    max_frame_bytes : int
        Largest declared size of one image, checked before it is decoded.

    Raises
    ------
    InputError
        Missing folder, no matching files, or a first image plstream cannot read.
    CorruptInputError
        A damaged first image.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, pattern: str = "*.tif*", max_frame_bytes: int = 2**31
    ) -> None:
        self._folder = Path(folder)
        self._pattern = pattern
        self._max_frame_bytes = max_frame_bytes
        self._closed = False
        self._stop_requested = False
        if not self._folder.exists():
            raise InputError(str(folder), "no such folder")
        if not self._folder.is_dir():
            raise InputError(str(folder), "is a file, not a folder; open it as a TIFF stack or video instead")
        wanted = pattern.casefold()
        self._files = sorted(
            (
                entry
                for entry in self._folder.iterdir()
                if not entry.name.startswith(".")
                and fnmatch.fnmatchcase(entry.name.casefold(), wanted)
                and entry.is_file()
            ),
            key=lambda entry: natural_key(entry.name),
        )
        if not self._files:
            raise InputError(
                str(folder),
                f"holds no files matching {pattern!r}; point to a folder of TIFF images or pass another pattern",
            )
        first = self._read_file(self._files[0])
        self._shape = first.shape
        self._dtype = first.dtype

    def _read_file(self, path: Path) -> np.ndarray:
        """The one grey image of a TIFF file."""
        name = str(path)
        tif = open_tiff(path)
        with tif:
            with tifffile_problems() as problems:
                try:
                    n_pages = len(tif.pages)
                    page = tif.pages[0] if n_pages else None
                except Exception as exc:  # damaged IFDs raise from deep inside tifffile
                    raise CorruptInputError(name, f"is damaged ({exc})") from exc
            if problems:
                raise CorruptInputError(name, f"is damaged: tifffile reports {problems[0]!r}")
            if page is None or 0 in page.shape:
                raise CorruptInputError(name, "contains no image")
            if n_pages > 1:
                raise InputError(
                    name,
                    f"holds {n_pages} images; a folder source needs one image per file "
                    "(open this file on its own as a TIFF stack)",
                )
            try:
                lead, frame_shape, sample_axis = frame_layout(page.axes, page.shape)
            except ValueError as exc:
                raise InputError(name, f"{exc}; plstream reads grey or RGB images") from exc
            if lead:
                raise InputError(name, f"holds a {page.axes} volume; plstream reads 2-D images")
            dtype = np.dtype(page.dtype)
            check_layout(name, dtype, frame_shape, sample_axis, self._max_frame_bytes)
            with tifffile_problems() as problems:
                try:
                    data = page.asarray()
                except Exception as exc:  # decoders raise many types on damaged data
                    raise CorruptInputError(name, f"cannot be decoded ({exc})") from exc
            if problems:
                raise CorruptInputError(name, f"is damaged: tifffile reports {problems[0]!r}")
        return to_grey(data, sample_axis)

    @property
    def files(self) -> list[Path]:
        """The image files, in the order they are streamed."""
        return list(self._files)

    def describe(self) -> dict[str, Any]:
        """The source description for the stream's ``start`` message."""
        return {
            "source": "tiff_folder",
            "path": str(self._folder),
            "pattern": self._pattern,
            "shape": list(self._shape),
            "dtype": self._dtype.name,
            "n_frames": len(self._files),
            "frame_rate_hz": None,
        }

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (the index-th file in natural order) as a grey 2-D array."""
        if self._closed:
            raise ValueError(f"{self._folder}: the source is closed; open it again")
        path = self._files[index]
        data = self._read_file(path)
        if data.shape != self._shape or data.dtype != self._dtype:
            raise InputError(
                str(path),
                f"is {data.shape[0]}x{data.shape[1]} {data.dtype}, but the first image {self._files[0].name} is "
                f"{self._shape[0]}x{self._shape[1]} {self._dtype}; every image in the folder must match",
            )
        return check_frame(str(path), data, index)

    def __iter__(self) -> Iterator[Frame]:
        """Yield every image in natural order (a fresh pass each time it is called)."""
        for seq in range(len(self._files)):
            if self._closed or self._stop_requested:
                return
            yield Frame(seq=seq, timestamp=time.time(), data=self.read(seq), metadata={"file": self._files[seq].name})

    def stop(self) -> None:
        """End an iteration in progress before its next frame; safe from another thread."""
        self._stop_requested = True

    def close(self) -> None:
        """Nothing is held open between frames; marks the source closed. Safe to call twice."""
        self._closed = True

    def __enter__(self) -> TiffFolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
