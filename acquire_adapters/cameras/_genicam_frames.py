"""From a GenTL buffer to a plstream frame: pixel formats, grey images, and ``seq`` from camera frame IDs.

Pure helpers over numpy arrays and harvesters' pixel-format table, so they
are tested without a camera (see :mod:`.genicam` for the choices: the deepest
mono format, colour summed to grey, 16-bit block IDs unwrapped).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from plstream.acquire_adapters.base import InputError

__all__ = ["FrameIds", "PixelFormat", "choose_pixel_format", "pixel_format", "to_image"]

logger = logging.getLogger(__name__)

_MONO = re.compile(r"Mono\d+(p|Packed)?")
_COLOUR = re.compile(r"(RGB|BGR)a?\d+")
_BLOCK_ID_WRAP = 0xFFFF  # GigE Vision 1 block IDs run 1..65535, then 1 again (0 is never used)
_WRAP_MARGIN = 0x1000  # a wrap is recognised when the IDs jump from the last 4096 to the first 4096


@dataclass(frozen=True)
class PixelFormat:
    """A pixel format as harvesters decodes it, and how it becomes one grey image."""

    name: str
    dtype: np.dtype  # of the decoded components
    channels: int  # components per pixel
    bits: int  # significant bits per component
    packed: bool
    colour: bool  # RGB/BGR(a): the first three channels are summed

    @property
    def out_dtype(self) -> np.dtype:
        """The frames' dtype: the components' one, widened where the colour sum or int8 needs it."""
        if self.colour:
            return np.dtype(np.uint16) if self.dtype.itemsize == 1 else np.dtype(np.uint32)
        return np.dtype(np.int16) if self.dtype == np.int8 else self.dtype


def pixel_format(name: str) -> PixelFormat | None:
    """How harvesters decodes ``name``, or None when plstream cannot make a grey image of it."""
    from harvesters.util.pfnc import Dictionary

    proxy = Dictionary.get_proxy(symbolic=name)
    if proxy is None:
        return None
    channels = int(proxy.nr_components)
    colour = bool(_COLOUR.fullmatch(name)) and channels in (3, 4)
    if channels != 1 and not colour:
        return None
    return PixelFormat(
        name=name,
        dtype=np.dtype(proxy.alignment.unpacked.name.lower()),
        channels=channels,
        bits=int(round(proxy.depth_in_bit / channels)),
        packed=bool(proxy.alignment.is_packed()),
        colour=colour,
    )


def choose_pixel_format(offered: list[str], requested: str, label: str) -> PixelFormat:
    """The format to use: ``requested``, or for "auto" the deepest mono one, else the deepest colour one."""
    usable = {name: fmt for name in offered if (fmt := pixel_format(name)) is not None}
    if requested != "auto":
        if requested not in offered:
            raise InputError(
                label,
                f"pixel_format {requested!r} is not offered by this camera; it offers {', '.join(offered)} "
                "(or use 'auto')",
            )
        if requested not in usable:
            raise InputError(
                label,
                f"pixel_format {requested!r} cannot be turned into a grey image here; use one of "
                f"{', '.join(usable) or '(none)'} or 'auto'",
            )
        return usable[requested]
    mono = [fmt for fmt in usable.values() if _MONO.fullmatch(fmt.name) and fmt.dtype.kind == "u"]
    if mono:
        return max(mono, key=lambda fmt: (fmt.bits, not fmt.packed))
    colour = [fmt for fmt in usable.values() if fmt.colour]
    if colour:
        return max(colour, key=lambda fmt: (fmt.bits, not fmt.packed, -fmt.channels))
    raise InputError(
        label,
        f"the camera offers no monochrome or RGB pixel format ({', '.join(offered)}); set pixel_format to one of "
        f"{', '.join(usable) or '(none usable)'}",
    )


def to_image(flat: np.ndarray, height: int, width: int, fmt: PixelFormat) -> np.ndarray:
    """A new C-contiguous (height, width) grey image from a buffer's 1-D component data (always a copy).

    Rows longer than ``width`` pixels (line padding, which harvesters leaves in) are cropped.
    """
    per_row = width * fmt.channels
    if height > 0 and flat.size == height * per_row:
        rows = flat.reshape(height, per_row)
    elif height > 0 and flat.size % height == 0 and flat.size // height > per_row:
        rows = flat.reshape(height, -1)[:, :per_row]
    else:
        raise ValueError(f"{flat.size} values cannot be a {height}x{width} {fmt.name} image")
    if fmt.colour:
        return rows.reshape(height, width, fmt.channels)[:, :, :3].sum(axis=2, dtype=fmt.out_dtype)
    return np.array(rows, dtype=fmt.out_dtype, order="C", copy=True)


class FrameIds:
    """Camera frame IDs -> ``seq``: the ID minus the first one delivered, 16-bit wrap-arounds unwrapped.

    A wrap is a jump from one of the last 4096 IDs below 65536 to one of the
    first 4096 (GigE Vision 1 block IDs: 65535 -> 1; a wrap onto 0 counts 0
    as the ID after 65535). Any other step backwards (the camera restarted its
    count) is logged and ``seq`` goes on from the last one.
    """

    def __init__(self, label: str) -> None:
        self._label = label
        self._offset: int | None = None  # seq = frame ID + offset
        self._last_id = 0
        self._last_seq = -1

    def seq(self, frame_id: int) -> int:
        """The ``seq`` of the frame with this camera frame ID (IDs given in delivery order)."""
        if self._offset is None:
            if frame_id > 1:
                logger.warning(
                    "%s: the first frame has camera frame ID %d; frames the camera sent before it (if it counts "
                    "from 1) cannot be accounted for, seq counts from this frame",
                    self._label,
                    frame_id,
                )
            self._offset = -frame_id
        elif frame_id <= self._last_id:
            if _BLOCK_ID_WRAP - _WRAP_MARGIN < self._last_id <= _BLOCK_ID_WRAP and frame_id < _WRAP_MARGIN:
                self._offset += _BLOCK_ID_WRAP if frame_id > 0 else _BLOCK_ID_WRAP + 1
                return self._advance(frame_id)
            logger.warning(
                "%s: camera frame ID went back from %d to %d (the camera restarted its count?); seq goes on "
                "from %d, frames lost at this point cannot be counted",
                self._label,
                self._last_id,
                frame_id,
                self._last_seq + 1,
            )
            self._offset = self._last_seq + 1 - frame_id
        return self._advance(frame_id)

    def _advance(self, frame_id: int) -> int:
        assert self._offset is not None
        self._last_id = frame_id
        self._last_seq = frame_id + self._offset
        return self._last_seq
