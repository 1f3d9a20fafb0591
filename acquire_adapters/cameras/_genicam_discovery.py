"""Finding a GenICam camera: the GenTL producer files, and the camera a ``device`` setting names.

A producer file is checked before GenTL loads it (genicam crashes the
interpreter on a shared library that is not a GenTL producer), and every
error is one :class:`~plstream.acquire_adapters.base.InputError` line that says
what to set: the path, or the cameras found with their serial numbers and IDs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from pathlib import Path
from typing import Any

from plstream.acquire_adapters.base import InputError
from plstream.acquire_adapters.cameras._genicam_nodes import genicam_errors

__all__ = ["GENTL_PATH_VARIABLE", "choose_device", "device_fields", "producer_files", "producers_in_use"]

logger = logging.getLogger(__name__)

GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH" if struct.calcsize("P") == 8 else "GENICAM_GENTL32_PATH"
# Functions every GenTL producer exports. genicam crashes the interpreter when it opens a shared
# library that lacks them, so a producer file is checked for them before it is handed over.
_GENTL_FUNCTIONS = (
    "GCInitLib",
    "GCCloseLib",
    "GCGetInfo",
    "TLOpen",
    "TLClose",
    "TLUpdateInterfaceList",
    "TLOpenInterface",
    "IFUpdateDeviceList",
    "IFOpenDevice",
    "DevOpenDataStream",
    "DSAnnounceBuffer",
    "DSQueueBuffer",
    "DSStartAcquisition",
    "EventGetData",
)


def _check_producer(path: str) -> str:
    """Why ``path`` is not a usable GenTL producer, or "" when it is one."""
    file = Path(path)
    if not file.exists():
        return "no such file"
    if not file.is_file():
        return "is not a file"
    try:
        library = ctypes.CDLL(str(file))
    except OSError as exc:
        return f"cannot be loaded as a shared library ({' '.join(str(exc).split())})"
    missing = [name for name in _GENTL_FUNCTIONS if not hasattr(library, name)]
    if missing:
        return f"is a shared library but not a GenTL producer (it lacks {', '.join(missing[:3])})"
    return ""


def producer_files(cti: str) -> list[str]:
    """The producer files to load: ``cti``, or every ``.cti`` in the folders of the GenTL path variable."""
    if cti:
        problem = _check_producer(cti)
        if problem:
            raise InputError(cti, f"{problem}; cti must be the GenTL producer (.cti file) of the camera's driver")
        return [cti]
    folders = [entry for entry in os.environ.get(GENTL_PATH_VARIABLE, "").split(os.pathsep) if entry.strip()]
    if not folders:
        raise InputError(
            "genicam",
            f"no GenTL producer: set cti to the .cti file of the camera's driver, or {GENTL_PATH_VARIABLE} "
            "to the folder that holds it",
        )
    found: list[str] = []
    for entry in folders:
        folder = Path(entry)
        if folder.is_file() and folder.suffix.lower() == ".cti":
            found.append(str(folder))
        elif folder.is_dir():
            found.extend(str(path) for path in sorted(folder.iterdir()) if path.suffix.lower() == ".cti")
    usable = []
    for path in found:
        problem = _check_producer(path)
        if problem:
            logger.warning("%s: skipped: %s", path, problem)
        else:
            usable.append(path)
    if not usable:
        listed = os.pathsep.join(folders)
        raise InputError(
            "genicam",
            f"no usable GenTL producer (.cti file) in {GENTL_PATH_VARIABLE}={listed}; set cti to the .cti file of "
            "the camera's driver",
        )
    return usable


def producers_in_use(paths: list[str]) -> list[str]:
    """Those of ``paths`` that this process has loaded already (GenTL lets a process open a producer once).

    Asked only to explain an empty camera list: it opens and closes each producer.
    """
    from genicam import gentl

    busy = []
    for path in paths:
        producer = gentl.GenTLProducer.create_producer()
        try:
            producer.open(path)
        except gentl.ResourceInUseException:
            busy.append(path)
        except gentl.GenericException as exc:
            logger.debug("%s: cannot be opened: %s", path, exc)
        else:
            producer.close()
    return busy


_DEVICE_FIELDS = (
    ("vendor", "vendor"),
    ("model", "model"),
    ("serial", "serial_number"),
    ("id", "id_"),
    ("user_defined_name", "user_defined_name"),
    ("display_name", "display_name"),
    ("tl_type", "tl_type"),
    ("version", "version"),
)


def device_fields(info: Any) -> dict[str, Any]:
    """What a harvesters DeviceInfo says of its camera, as plain str/int/float values (missing ones left out)."""
    fields: dict[str, Any] = {}
    unanswered: tuple[type[BaseException], ...] = (*genicam_errors(), AttributeError)
    for key, attribute in _DEVICE_FIELDS:
        try:
            value = getattr(info, attribute)
        except unanswered:
            continue
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
            fields[key] = value
    return fields


def choose_device(found: list[dict[str, Any]], device: str) -> int:
    """Index of the camera ``device`` names: a serial number, user-defined name or device ID, else an index."""
    if not device:
        return 0
    keys = ("serial", "user_defined_name", "id")
    matches = [i for i, fields in enumerate(found) if device in (fields.get(key) for key in keys)]
    listing = "; ".join(
        f"[{i}] serial {fields.get('serial', '?')!r}, id {fields.get('id', '?')!r}, "
        f"{fields.get('vendor', '?')} {fields.get('model', '?')}"
        + (f", name {fields['user_defined_name']!r}" if "user_defined_name" in fields else "")
        for i, fields in enumerate(found)
    )
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError("genicam", f"device {device!r} names {len(matches)} cameras ({listing}); use a serial number")
    if device.strip().isdigit() and int(device) < len(found):
        return int(device)
    raise InputError(
        "genicam",
        f"no camera {device!r} among the {len(found)} found: {listing}; set device to a serial number, "
        f"user-defined name, device ID or index (0..{len(found) - 1})",
    )
