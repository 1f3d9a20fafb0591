"""Stream-health texts and the banner: what the health panel shows, decided without Qt."""

from __future__ import annotations

from typing import Any

__all__ = ["BANNER_LEVELS", "HEALTH_FIELDS", "health_texts"]

BANNER_LEVELS = ("ok", "info", "warning", "error")
"""Banner severities, mildest first ("ok": no banner)."""

HEALTH_FIELDS: tuple[tuple[str, str], ...] = (
    ("frames_received", "Frames received"),
    ("frames_analyzed", "Analyzed"),
    ("frames_shown", "Shown here"),
    ("frames_per_second", "Rate"),
    ("lag", "Lag"),
    ("gaps", "Gaps"),
    ("spots", "Spots"),
    ("elapsed", "Elapsed"),
)
"""(key, label) of each health value, in display order."""


def _int(status: dict[str, Any], key: str) -> int | None:
    value = status.get(key)
    return None if value is None else int(value)


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{sec:02d}"


def _values(status: dict[str, Any], n_frames: int, n_spots: int) -> dict[str, str]:
    received = _int(status, "frames_received")
    source = _int(status, "source_frames")
    analyzed = _int(status, "frames_analyzed")
    failed = _int(status, "frames_failed") or 0
    gaps = _int(status, "gaps")
    missing = _int(status, "frames_missing") or 0
    fps = status.get("frames_per_second")
    lag_s, lag_frames = status.get("lag_s"), status.get("lag_frames")
    elapsed = status.get("elapsed_s")
    values = {
        "frames_received": "—" if received is None else f"{received:,}" + (f" of {source:,}" if source else ""),
        "frames_analyzed": "—" if analyzed is None else f"{analyzed:,}" + (f" ({failed:,} failed)" if failed else ""),
        "frames_shown": f"{n_frames:,}",
        "frames_per_second": "—" if fps is None else f"{float(fps):.1f} frames/s",
        "gaps": "—" if gaps is None else (f"{gaps:,} ({missing:,} frames missing)" if gaps else "none"),
        "spots": f"{max(n_spots, _int(status, 'spots') or 0):,}",
        "elapsed": "—" if elapsed is None else _duration(elapsed),
    }
    lag = []
    if lag_s is not None:
        lag.append(f"{float(lag_s):.2f} s")
    if lag_frames is not None:
        lag.append(f"{int(lag_frames):,} frames")
    values["lag"] = ", ".join(lag) if lag else "—"
    return values


def health_texts(
    status: dict[str, Any],
    *,
    n_frames: int,
    n_spots: int,
    connected: bool,
    ever_connected: bool,
    connection_detail: str,
    source_name: str,
    session_id: str,
    stalled_s: float,
    stall_s: float,
) -> dict[str, str]:
    """The health panel's display strings and the banner (``banner_level``, ``banner_text``).

    Banner priority: a lost connection; then the analyzer's state (error,
    interrupted, complete, waiting); then a running stream whose frame count
    has not moved for ``stall_s`` ("Source stopped"). A stream that ended and
    whose analyzer then went away keeps its "Stream ended" banner.
    """
    values = _values(status, n_frames, n_spots)
    values["session"] = session_id or "—"
    state = str(status.get("state", "")) if status else ""
    message = str(status.get("message", "") or "")
    where = f" ({source_name})" if source_name else ""
    level, text = "ok", ""
    ended = state in ("complete", "interrupted", "error")
    if not connected and not (ended and ever_connected):
        if ever_connected:
            level, text = "error", f"Connection lost — retrying{where}"
        else:
            level, text = "warning", f"Connecting{where} — no answer yet"
        if connection_detail:
            text += f": {connection_detail}"
    elif state == "error":
        level, text = "error", f"Analysis error: {message or 'see the analyzer log'}"
    elif state == "interrupted":
        level, text = "warning", f"Source stopped: {message or 'the stream was interrupted'}"
    elif state == "complete":
        lost = (_int(status, "frames_missing") or 0) + (_int(status, "frames_failed") or 0)
        level = "warning" if lost else "info"  # a run that lost frames is not plainly complete
        text = f"Stream ended: complete ({n_frames:,} frames)" + (f" — {message}" if message else "")
    elif state == "waiting" or (not state and n_frames == 0):
        level, text = "info", "Waiting for frames" + (f" — {message}" if message else "")
    elif state == "running" and stalled_s > stall_s:
        level, text = "warning", f"Source stopped? No new frames for {_duration(stalled_s)}"
    if ended and not connected and ever_connected:
        text += " (analyzer gone)"
    values["banner_level"], values["banner_text"] = level, text
    return values
