"""Append uncompressed 2-D pages to a little-endian BigTIFF so that the file is valid after every page.

tifffile's ``TiffWriter`` cannot do this (checked with tifffile 2026.3): a
contiguous series gets the IFDs of all its pages but the first only at
``close()``, so a killed writer leaves a one-page file; separate writes link
the new page into the IFD chain *before* its pixels and IFD are written, so a
writer killed (or out of disk) inside a frame leaves a chain pointing at an
unwritten IFD, which readers report as damage.

Here each page is written as pixels, then its IFD, and only then linked from
the previous IFD (an 8-byte write). A process killed at any moment leaves every
linked page complete; a failed write is cut off the end of the file again. The
first page carries the ImageDescription, which :meth:`BigTiffPages.replace_description`
later repoints at a new value appended to the file (one 16-byte write), the way
TIFF writers finalize OME-XML.

Layout of one page: ``[pad to 16][pixels][pad to 8][IFD][out-of-line tag values]``.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["BigTiffPages", "create_new"]

logger = logging.getLogger(__name__)

_HEADER = struct.pack("<2sHHHQ", b"II", 43, 8, 0, 0)  # BigTIFF, first-IFD offset (at byte 8) still 0
_FIRST_LINK = 8
_ENTRY = struct.Struct("<HHQ8s")  # tag, type, count, value or offset
_ASCII, _SHORT, _LONG, _LONG8 = 2, 3, 4, 16
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}
_DESCRIPTION, _SOFTWARE = 270, 305


def _pad(position: int, alignment: int) -> int:
    return (-position) % alignment


class BigTiffPages:
    """Appends grey 2-D pages of one shape and dtype to a new BigTIFF file.

    Parameters
    ----------
    file : io.RawIOBase
        A new, empty file opened unbuffered for writing (``open(path, "xb", buffering=0)``);
        this object writes the header at once and closes the file in :meth:`close`.
    shape : (int, int)
        Rows, columns of every page.
    dtype : numpy.dtype
        Pixel type (integer or float); pages are stored little-endian.
    description : str
        ASCII ImageDescription of the first page.
    software : str
        ASCII Software tag of the first page.

    Notes
    -----
    Not thread-safe: one thread appends. Every method raises ``OSError`` when
    the file cannot be written; :meth:`append` then leaves the file as it was
    before the call (the partial page is truncated away when the disk allows).
    """

    def __init__(self, file: io.RawIOBase, shape: tuple[int, int], dtype: np.dtype, description: str, software: str):
        self._file = file
        self._shape = (int(shape[0]), int(shape[1]))
        self._dtype = np.dtype(dtype).newbyteorder("<")
        self._description = description.encode("ascii") + b"\x00"
        self._software = software.encode("ascii") + b"\x00"
        self._link = _FIRST_LINK  # where the offset of the next page's IFD goes
        self._description_entry: int | None = None  # file offset of page 0's ImageDescription entry
        self._description_value: tuple[int, int] | None = None  # its value's (offset, length)
        self.pages = 0
        self.size = 0
        self._write_at(0, _HEADER)
        self.size = len(_HEADER)

    @property
    def frame_bytes(self) -> int:
        """Bytes of pixels in one page."""
        return self._shape[0] * self._shape[1] * self._dtype.itemsize

    def _write_at(self, offset: int, *parts: bytes | memoryview) -> None:
        self._file.seek(offset)
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                written = self._file.write(view)
                if not written:  # a raw file returns None or 0 only when it cannot write now
                    raise OSError(f"the file accepted no bytes at offset {self._file.tell()}")
                view = view[written:]

    def append(self, frame: np.ndarray) -> int:
        """Append one page (pixels, IFD, then the link to it); returns the bytes it added to the file."""
        if frame.shape != self._shape or frame.dtype != self._dtype or not frame.flags.c_contiguous:
            raise ValueError(
                f"page must be a C-contiguous {self._shape} {self._dtype} array, got {frame.shape} {frame.dtype}"
            )
        start = self.size
        data_at = start + _pad(start, 16)
        ifd_at = data_at + self.frame_bytes + _pad(data_at + self.frame_bytes, 8)
        ifd, next_link, description = self._ifd(ifd_at, data_at)
        try:
            self._write_at(start, bytes(data_at - start), frame.data, bytes(ifd_at - data_at - self.frame_bytes), ifd)
            self._write_at(self._link, struct.pack("<Q", ifd_at))
        except OSError:
            self._cut(start)
            raise
        if description is not None:
            self._description_entry, value_at = description
            self._description_value = (value_at, len(self._description))
        self._link = next_link
        self.pages += 1
        self.size = ifd_at + len(ifd)
        return self.size - start

    def _ifd(self, ifd_at: int, data_at: int) -> tuple[bytes, int, tuple[int, int] | None]:
        """The IFD of a page at ``ifd_at`` whose pixels are at ``data_at``.

        Returns the IFD with its out-of-line values, the file offset of its
        next-IFD link, and for page 0 the file offsets of its ImageDescription
        entry and value.
        """
        rows, cols = self._shape
        entries: list[tuple[int, int, int | bytes]] = [
            (256, _LONG, cols),
            (257, _LONG, rows),
            (258, _SHORT, self._dtype.itemsize * 8),
            (259, _SHORT, 1),  # no compression
            (262, _SHORT, 1),  # min-is-black
            (273, _LONG8, data_at),
            (277, _SHORT, 1),
            (278, _LONG, rows),  # one strip
            (279, _LONG8, self.frame_bytes),
            (339, _SHORT, _SAMPLE_FORMAT[self._dtype.kind]),
        ]
        if self.pages == 0:
            entries += [(_DESCRIPTION, _ASCII, self._description), (_SOFTWARE, _ASCII, self._software)]
            entries.sort(key=lambda entry: entry[0])
        next_link = ifd_at + 8 + len(entries) * _ENTRY.size
        values_at = next_link + 8
        head = [struct.pack("<Q", len(entries))]
        tail: list[bytes] = []
        description = None
        for tag, kind, value in entries:
            if isinstance(value, int):
                packed = struct.pack({_SHORT: "<H", _LONG: "<I", _LONG8: "<Q"}[kind], value)
                head.append(_ENTRY.pack(tag, kind, 1, packed.ljust(8, b"\x00")))
            elif len(value) <= 8:  # fits in the entry itself
                head.append(_ENTRY.pack(tag, kind, len(value), value.ljust(8, b"\x00")))
            else:
                at = values_at + sum(map(len, tail))
                if tag == _DESCRIPTION:
                    description = (ifd_at + 8 + (len(head) - 1) * _ENTRY.size, at)
                head.append(_ENTRY.pack(tag, kind, len(value), struct.pack("<Q", at)))
                tail.append(value + bytes(len(value) % 2))  # values start on a word boundary
        return b"".join(head) + struct.pack("<Q", 0) + b"".join(tail), next_link, description

    def replace_description(self, text: str) -> None:
        """Point page 0's ImageDescription at ``text`` (ASCII), appended to the file; the old value is zeroed.

        Until the final 16-byte write the file keeps its old description, so a
        failure (disk full) leaves it as it was.
        """
        if self._description_entry is None or self._description_value is None:
            raise ValueError("the file has no page yet, or its ImageDescription fits in 8 bytes: nothing to replace")
        value = text.encode("ascii") + b"\x00"
        start = self.size
        at = start + _pad(start, 8)
        try:
            self._write_at(start, bytes(at - start), value)
            self._write_at(self._description_entry + 4, struct.pack("<QQ", len(value), at))
        except OSError:
            self._cut(start)
            raise
        self.size = at + len(value)
        old_at, old_length = self._description_value
        self._description_value = (at, len(value))
        try:  # tidiness only: nothing points at the old value any more
            self._write_at(old_at, bytes(old_length))
        except OSError as exc:
            logger.debug("could not zero the replaced ImageDescription at offset %d (%s)", old_at, exc)

    def _cut(self, size: int) -> None:
        """Drop what a failed write left after ``size`` bytes (best effort: the file is valid either way)."""
        try:
            self._file.truncate(size)
        except OSError as exc:
            logger.debug("could not cut the file back to %d bytes after a failed write (%s)", size, exc)

    def flush_to_disk(self) -> None:
        """Ask the operating system to put everything written on the disk (``fsync``)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; safe to call twice."""
        self._file.close()


def create_new(path: Path) -> io.RawIOBase:
    """Open ``path`` as a new file for unbuffered binary writing; ``FileExistsError`` if it exists."""
    return open(path, "xb", buffering=0)
