"""Value checks of the live result protocol's header fields, shared by :mod:`.wire`'s encoders and decoders.

Each check takes a decoded msgpack value and returns it normalized (numpy scalars
as Python numbers), or raises :class:`~._checks.Invalid` saying what is wrong; the
caller adds the field name and turns it into a :class:`LiveProtocolError`. The
primitives shared with :mod:`.wire` live in :mod:`._checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plstream.stream._checks import Invalid, is_int, is_number, mapping, type_name
from plstream.stream.live.messages import LIVE_STATES

MAX_INT = 2**63 - 1
"""Largest integer a header field may hold (int64)."""


def integer(minimum: int, maximum: int = MAX_INT, *, nullable: bool = False) -> Callable[[Any], int | None]:
    """A check for an integer in ``[minimum, maximum]`` (or nil, when ``nullable``)."""

    def check(value: Any) -> int | None:
        if value is None and nullable:
            return None
        if not is_int(value):
            raise Invalid(f"expected an integer{' or nil' if nullable else ''}, got {type_name(value)}")
        if not minimum <= value <= maximum:
            raise Invalid(f"must be in [{minimum}, {maximum}], is {value}")
        return int(value)

    return check


def number(nullable: bool) -> Callable[[Any], float | None]:
    """A check for an int or float, any value (or nil, when ``nullable``)."""

    def check(value: Any) -> float | None:
        if value is None and nullable:
            return None
        if not is_number(value):
            raise Invalid(f"expected a number{' or nil' if nullable else ''}, got {type_name(value)}")
        return float(value)

    return check


def string(max_chars: int = 1 << 20, min_chars: int = 0) -> Callable[[Any], str]:
    """A check for a string of ``min_chars`` to ``max_chars`` characters."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {type_name(value)}")
        if not min_chars <= len(value) <= max_chars:
            raise Invalid(f"must have {min_chars} to {max_chars} characters, has {len(value)}")
        return value

    return check


def pair(value: Any) -> list[int]:
    """Check ``[rows, cols]``: two integers >= 0."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_int(n) and n >= 0 for n in value):
        raise Invalid(f"expected [rows, cols] of two integers >= 0, got {value!r:.80}")
    return [int(n) for n in value]


def state(value: Any) -> str:
    """Check a ``status["state"]``: one of :data:`LIVE_STATES`."""
    if not isinstance(value, str) or value not in LIVE_STATES:
        raise Invalid(f"{value!r:.40} is not one of {', '.join(LIVE_STATES)}")
    return value


_COUNT = integer(0)
STATUS_CHECKS: dict[str, Callable[[Any], Any]] = {
    "state": state,
    "message": string(),
    **dict.fromkeys(("frames_received", "frames_analyzed", "frames_failed", "frames_missing", "gaps", "spots"), _COUNT),
    "source_frames": integer(0, nullable=True),
    "frames_per_second": number(False),
    "elapsed_s": number(False),
    "lag_s": number(True),
    "lag_frames": integer(-MAX_INT, nullable=True),
}
"""Checks of the documented ``status`` keys (``LiveUpdate.status``); other keys pass unchecked."""
INFO_CHECKS: dict[str, Callable[[Any], Any]] = {
    "run_uid": string(),
    "shape": pair,
    "source": mapping,
    "result_path": string(),
    "frame_rate_hz": number(True),
    "psf_sigma_px": number(True),
    "pixel_size_um": number(True),
    "frame_interval_s": number(True),
}
"""Checks of the documented ``info`` keys (``LiveUpdate.info``) when present; other keys pass unchecked."""


def known_keys(checks: dict[str, Callable[[Any], Any]], required: tuple[str, ...]) -> Callable[[Any], dict]:
    """A map check that also checks the documented keys it holds (others pass through)."""

    def check(value: Any) -> dict[str, Any]:
        out = dict(mapping(value))
        for key in required:
            if key not in out:
                raise Invalid(f"key {key!r} is missing")
        for key, key_check in checks.items():
            if key in out:
                try:
                    out[key] = key_check(out[key])
                except Invalid as exc:
                    raise Invalid(f"key {key!r}: {exc}") from None
        return out

    return check
