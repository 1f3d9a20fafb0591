"""Shared TIFF reading helpers of the TIFF adapters: sniffing, tifffile's logged problems, layouts, grey.

tifffile logs many problems (truncated IFD chains, short strips, bad
offsets) and returns partial data instead of raising; :func:`tifffile_problems`
collects those log records so the adapters can raise
:class:`~plstream.acquire_adapters.base.CorruptInputError` instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from plstream.acquire_adapters.base import CorruptInputError, InputError

__all__ = ["check_frame", "check_layout", "frame_layout", "is_tiff", "open_tiff", "tifffile_problems", "to_grey"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def is_tiff(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with a TIFF or BigTIFF header."""
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def tifffile_problems() -> Iterator[list[str]]:
    """Collect what tifffile logs at WARNING or above inside the block.

    The ``tifffile`` logger's level is lowered to WARNING for the duration if
    the application set it higher. The handler sees every thread's records,
    so a source read concurrently with another may report the other's problem.
    """
    log = logging.getLogger("tifffile")
    handler = _Collector()
    old_level = log.level
    if log.getEffectiveLevel() > logging.WARNING:
        log.setLevel(logging.WARNING)
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def frame_layout(axes: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int | None]:
    """Split an image's axes into leading (frame) dims, one frame's shape and its samples axis.

    Returns
    -------
    lead : tuple of int
        Dimensions before the frame (their product is the number of frames).
    frame_shape : tuple of int
        Shape of one stored frame: (Y, X), (Y, X, S) or (S, Y, X).
    sample_axis : int or None
        Axis of ``frame_shape`` holding colour samples, None for grey.

    Raises
    ------
    ValueError
        For layouts that are not a stack of 2-D (optionally colour) images.
    """
    if axes.endswith("YXS"):
        return tuple(shape[:-3]), tuple(shape[-3:]), 2
    if axes.endswith("SYX"):
        return tuple(shape[:-3]), tuple(shape[-3:]), 0
    if axes.endswith("YX"):
        return tuple(shape[:-2]), tuple(shape[-2:]), None
    raise ValueError(f"axes {axes!r} are not a stack of 2-D images")


def to_grey(frame: np.ndarray, sample_axis: int | None) -> np.ndarray:
    """One grey 2-D image from a stored frame.

    Grey and grey+alpha: the first sample. RGB(A): when R, G and B are equal,
    that channel exactly; otherwise ``0.299 R + 0.587 G + 0.114 B`` (ITU-R
    BT.601 luma, alpha ignored), rounded and clipped to the input's integer
    type (float inputs stay float).
    """
    if sample_axis is None:
        return np.ascontiguousarray(frame)
    channels = np.moveaxis(frame, sample_axis, 0)
    if channels.shape[0] < 3:
        return np.ascontiguousarray(channels[0])
    red, green, blue = channels[0], channels[1], channels[2]
    if np.array_equal(red, green) and np.array_equal(red, blue):
        return np.ascontiguousarray(red)
    grey = _LUMA[0] * red.astype(np.float64) + _LUMA[1] * green + _LUMA[2] * blue
    if frame.dtype.kind in "ui":
        info = np.iinfo(frame.dtype)
        return np.clip(np.rint(grey), info.min, info.max).astype(frame.dtype)
    return grey.astype(frame.dtype)


def check_frame(path: str, frame: np.ndarray, index: int) -> np.ndarray:
    """Reject float frames with NaN or Inf (CorruptInputError naming the frame)."""
    if frame.dtype.kind == "f":
        bad = int(frame.size - np.count_nonzero(np.isfinite(frame)))
        if bad:
            raise CorruptInputError(path, f"frame {index} has {bad} NaN or infinite pixels")
    return frame


def check_layout(
    path: str, dtype: np.dtype, frame_shape: tuple[int, ...], sample_axis: int | None, max_frame_bytes: int
) -> None:
    """Refuse data types, colour layouts and declared frame sizes plstream cannot handle (before decoding)."""
    if dtype.kind not in "uif":
        raise InputError(path, f"holds {dtype} pixels; plstream reads integer or float images")
    if sample_axis is not None and frame_shape[sample_axis] > 4:
        raise InputError(
            path, f"has {frame_shape[sample_axis]} samples per pixel; plstream reads grey or RGB(A) images"
        )
    frame_bytes = math.prod(frame_shape) * dtype.itemsize
    if frame_bytes > max_frame_bytes:
        raise InputError(
            path,
            f"declares frames of {'x'.join(map(str, frame_shape))} {dtype} = {frame_bytes} bytes, more than "
            f"max_frame_bytes={max_frame_bytes}; pass a larger max_frame_bytes if the file is genuine",
        )


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF, turning every failure into InputError (not a TIFF) or CorruptInputError."""
    if not path.exists():
        raise InputError(str(path), "no such file")
    if not path.is_file():
        raise InputError(str(path), "is not a file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(str(path), "is empty (0 bytes), not a TIFF file")
    if not is_tiff(path):
        with open(path, "rb") as f:
            head = f.read(4)
        raise InputError(
            str(path),
            f"not a TIFF file (it starts with {head!r}, a TIFF starts with b'II*\\x00' or "
            "b'MM\\x00*'); plstream reads TIFF stacks, folders of TIFFs and videos",
        )
    with tifffile_problems() as problems:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile and its codecs raise many types on damaged headers
            raise CorruptInputError(str(path), f"has a TIFF header but cannot be read ({exc})") from exc
    if problems:
        tif.close()
        raise CorruptInputError(str(path), f"has a TIFF header but is damaged: tifffile reports {problems[0]!r}")
    return tif
