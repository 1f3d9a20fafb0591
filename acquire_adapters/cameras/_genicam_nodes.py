"""GenICam nodes read and set by name, with errors that name the node, the value and what the camera allows.

:class:`NodeAccess` wraps a harvesters node map (``remote_device.node_map``).
Values are checked before they are written (type, range, step, enumeration
entry, writability), so a wrong setting gives one
:class:`~plstream.acquire_adapters.base.InputError` line such as
``cannot set node Width = 50 (roi_px): out of range; allowed: 100..800 in steps of 1``
instead of a GenApi exception; whatever the camera still refuses is reported
the same way with its own reason. The ``genicam`` package is imported only
when a node is touched.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from plstream.acquire_adapters.base import InputError

__all__ = ["NodeAccess", "genicam_errors", "short_reason"]


def genicam_errors() -> tuple[type[BaseException], ...]:
    """The base exceptions of GenApi and GenTL (what a node or buffer access may raise)."""
    from genicam import genapi, gentl

    return (genapi.GenericException, gentl.GenericException)


def short_reason(exc: BaseException) -> str:
    """A GenApi or GenTL exception's message without the C++ source file and line it names."""
    text = " ".join(str(exc).split())
    text = text.split(" : ")[0].strip().rstrip(".")
    return text or type(exc).__name__


def _plain(value: Any) -> Any:
    """A node value as bool, int, float or str (msgpack-serializable)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class NodeAccess:
    """Read and set the nodes of one device's node map.

    Parameters
    ----------
    node_map : genicam.genapi.NodeMap
        Usually ``image_acquirer.remote_device.node_map``.
    label : str
        The camera, as the errors name it (the ``path`` of the InputError).
    """

    def __init__(self, node_map: Any, label: str) -> None:
        self._map = node_map
        self._label = label

    def has(self, name: str) -> bool:
        """Whether the device has a node of this name (available or not)."""
        return bool(self._map.has_node(name))

    def writable(self, name: str) -> bool:
        """Whether the node exists and can be written now."""
        from genicam import genapi

        return self.has(name) and bool(genapi.is_writable(self._map.get_node(name).node))

    def read(self, name: str) -> Any:
        """The node's current value (bool, int, float or str), or None when it is missing, unreadable or fails."""
        from genicam import genapi

        if not self.has(name):
            return None
        node = self._map.get_node(name)
        if not isinstance(node, (genapi.IInteger, genapi.IFloat, genapi.IBoolean, genapi.IEnumeration, genapi.IString)):
            return None
        try:
            if not genapi.is_readable(node.node):
                return None
            return _plain(node.value)
        except genicam_errors():
            return None

    def entries(self, name: str) -> list[str]:
        """The entries of an enumeration node that are available now (e.g. the pixel formats offered)."""
        return [str(entry) for entry in self._map.get_node(name).symbolics]

    def integer_limits(self, name: str) -> tuple[int, int, int]:
        """(min, max, step) of an integer node as the camera allows them now."""
        node = self._map.get_node(name)
        return int(node.min), int(node.max), max(int(node.inc), 1)

    def set(self, name: str, value: Any, origin: str = "") -> Any:
        """Set a node by name (checked first) and return the value it reads back.

        A command node is executed when ``value`` is True.

        Parameters
        ----------
        name : str
            The GenICam node name, e.g. ``Gain`` or ``ExposureAuto``.
        value : bool, int, float or str
        origin : str
            The setting that asked for it (``nodes``, ``roi_px``, ...), named in errors.

        Raises
        ------
        InputError
            No such node, read-only or not available now, wrong type, out of
            range, not an enumeration entry, or refused by the camera.
        """
        from genicam import genapi

        def fail(reason: str, allowed: str = "") -> InputError:
            where = f" ({origin})" if origin else ""
            tail = f"; allowed: {allowed}" if allowed else ""
            return InputError(self._label, f"cannot set node {name} = {value!r}{where}: {reason}{tail}")

        if not self.has(name):
            names = [node.node.name for node in self._map.nodes]
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (node names are case-sensitive)"
            raise fail(f"the camera has no node of this name{hint}")
        node = self._map.get_node(name)
        if not genapi.is_writable(node.node):
            current = self.read(name)
            if current is not None:
                raise fail(f"it is read-only (now {current!r})")
            raise fail("it cannot be written now (it may depend on another node, e.g. a selector or an ...Enable node)")
        allowed = self._allowed(node)
        problem = self._problem(node, value)
        if problem:
            raise fail(problem, allowed)
        try:
            if isinstance(node, genapi.ICommand):
                node.execute()
                return True
            node.value = value
        except genicam_errors() as exc:
            raise fail(f"the camera refused it ({short_reason(exc)})", allowed) from exc
        return self.read(name)

    @staticmethod
    def _allowed(node: Any) -> str:
        """What a node accepts, in words."""
        from genicam import genapi

        try:
            if isinstance(node, genapi.IInteger):
                return f"{int(node.min)}..{int(node.max)} in steps of {max(int(node.inc), 1)}"
            if isinstance(node, genapi.IFloat):
                unit = f" {node.unit}" if node.unit else ""
                return f"{node.min:g}..{node.max:g}{unit}"
            if isinstance(node, genapi.IEnumeration):
                return "one of " + ", ".join(node.symbolics)
        except genicam_errors():
            return ""
        if isinstance(node, genapi.IBoolean):
            return "true or false"
        if isinstance(node, genapi.IString):
            return "a string"
        if isinstance(node, genapi.ICommand):
            return "true (runs the command)"
        return ""

    @staticmethod
    def _problem(node: Any, value: Any) -> str:
        """Why ``value`` cannot go into ``node``, or "" when it can."""
        from genicam import genapi

        if isinstance(node, genapi.IInteger):
            if isinstance(value, bool) or not isinstance(value, int):
                return "it takes an integer"
            low, high, step = int(node.min), int(node.max), max(int(node.inc), 1)
            if not low <= value <= high:
                return "out of range"
            if (value - low) % step:
                below = value - (value - low) % step
                return f"not on its step of {step} from {low} (nearest: {below} or {below + step})"
            return ""
        if isinstance(node, genapi.IFloat):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return "it takes a finite number"
            return "" if node.min <= value <= node.max else "out of range"
        if isinstance(node, genapi.IBoolean):
            return "" if isinstance(value, bool) else "it takes true or false"
        if isinstance(node, genapi.IEnumeration):
            if not isinstance(value, str):
                return "it takes the name of one of its entries"
            return "" if value in node.symbolics else "not one of its entries available now"
        if isinstance(node, genapi.IString):
            return "" if isinstance(value, str) else "it takes a string"
        if isinstance(node, genapi.ICommand):
            return "" if value is True else "it is a command; set it to true to run it"
        return f"it is a {type(node).__name__} node, which plstream does not set"
