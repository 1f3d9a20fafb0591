"""Typed, frozen settings loaded in layers: defaults < user TOML < ``--set``.

The defaults live in ``default.toml`` next to this module; every key a user may
set appears there with its unit and meaning. A value of ``"auto"`` in TOML is
``None`` here: the analysis takes it from the stream or estimates it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "BlinkingSettings",
    "CameraSettings",
    "DetectionSettings",
    "DriftSettings",
    "FitSettings",
    "GenicamSettings",
    "IntegrationSettings",
    "LiveSettings",
    "MicroManagerSettings",
    "OutputSettings",
    "PsfSettings",
    "RecordingSettings",
    "SecuritySettings",
    "Settings",
    "SettingsError",
    "SimulationSettings",
    "StreamSettings",
    "default_settings",
    "load_settings",
]

SCHEMA_VERSION = 1
AUTO = "auto"


class SettingsError(ValueError):
    """A settings file or override is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Allowed:
    """The values a setting may take; checked whenever settings are made (:meth:`check`).

    Attributes
    ----------
    low, high : float, optional
        Bounds (None: unbounded); ``low_open`` / ``high_open`` exclude them.
    odd : bool
        Whole numbers only: must be odd.
    endpoint : bool
        Strings: a ZeroMQ endpoint ``tcp://HOST:PORT`` or ``ipc://PATH``; ``empty_ok`` also allows "".
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    odd: bool = False
    endpoint: bool = False
    empty_ok: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """The allowed values in words, e.g. ``> 0`` or ``between 0 and 1 (0 < x <= 1)``."""
        if self.endpoint:
            text = "a ZeroMQ endpoint tcp://HOST:PORT or ipc://PATH"
            return text + ' (or "" for none)' if self.empty_ok else text
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        below = "<" if self.low_open else "<="
        above = "<" if self.high_open else "<="
        if self.low is not None and self.high is not None:
            text = f"between {self.low:g} and {self.high:g} ({self.low:g} {below} x {above} {self.high:g})"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{above} {self.high:g}"
        else:
            text = "a finite number"
        return text + " and odd" if self.odd else text

    def accepts(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.endpoint:
            return (self.empty_ok and value == "") or bool(_ENDPOINT.fullmatch(value))
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return not (self.odd and value % 2 == 0)


_ENDPOINT = re.compile(r"(tcp://[^\s:]+:\d+|ipc://\S+|inproc://\S+)")
_FINITE = Allowed()


def _setting(default: Any, **allowed: Any) -> Any:
    """A dataclass field with its allowed values (see :class:`Allowed`)."""
    return field(default=default, metadata={"allowed": Allowed(**allowed)})


def _check_section(name: str, section: Any) -> None:
    """Type and range of every key of one section (and its sub-sections); SettingsError naming the key."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        where = f"{name}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            _check_section(where, value)
            continue
        _check_type(where, value, hints[f.name])
        if value is None or isinstance(value, dict):
            continue
        allowed: Allowed = f.metadata.get("allowed", _FINITE)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                continue
            if isinstance(v, str) and not (allowed.endpoint or allowed.choices):
                continue
            if not allowed.accepts(v):
                raise SettingsError(f"{where} = {value!r} is not allowed: it must be {allowed.describe()}")


@dataclass(frozen=True)
class GenicamSettings:
    """A GenICam camera through a GenTL producer (``[camera.genicam]``; ``plstream acquire genicam``)."""

    cti: str = ""
    device: str = ""
    pixel_format: str = "auto"
    exposure_us: float | None = _setting(None, low=0, low_open=True)
    frame_rate_hz: float | None = _setting(None, low=0, low_open=True)
    roi_px: tuple[int, int, int, int] | None = _setting(None, low=0)
    buffers: int = _setting(64, low=2, high=100_000)
    nodes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MicroManagerSettings:
    """A camera driven by Micro-Manager's core through pymmcore-plus (``[camera.micromanager]``)."""

    config: str = ""
    camera: str = ""
    adapter_path: str = ""
    exposure_ms: float | None = _setting(None, low=0, low_open=True)
    binning: int | None = _setting(None, low=1, high=64)
    roi_px: tuple[int, int, int, int] | None = _setting(None, low=0)
    buffer_mb: int = _setting(1024, low=16, high=1_048_576)


@dataclass(frozen=True)
class CameraSettings:
    offset_adu: float | None = _setting(None)
    gain_adu_per_e: float | None = _setting(None, low=0, low_open=True)
    read_noise_e: float | None = _setting(None, low=0)
    assumed_read_noise_e: float = _setting(1.5, low=0)
    estimate_frames: int = _setting(50, low=10, high=100_000)
    pixel_size_um: float | None = _setting(None, low=0, low_open=True)
    frame_interval_s: float | None = _setting(None, low=0, low_open=True)
    genicam: GenicamSettings = field(default_factory=GenicamSettings)
    micromanager: MicroManagerSettings = field(default_factory=MicroManagerSettings)


@dataclass(frozen=True)
class PsfSettings:
    sigma_px: float | None = _setting(None, low=0.3, high=50)
    initial_sigma_px: float = _setting(1.5, low=0.3, high=50)


@dataclass(frozen=True)
class DetectionSettings:
    polarity: str = _setting("auto", choices=("auto", "bright", "dark"))
    threshold_sigma: float = _setting(5.0, low=0, low_open=True)
    late_threshold_sigma: float = _setting(6.0, low=0, low_open=True)
    every_frames: int = _setting(10, low=1)
    late_band_px: int = _setting(128, low=0)
    match_radius_px: float = _setting(2.0, low=0, low_open=True)
    border_px: int = _setting(3, low=0)


@dataclass(frozen=True)
class FitSettings:
    roi_size_px: int | None = _setting(None, low=3, high=101, odd=True)
    max_iterations: int = _setting(20, low=1, high=10_000)
    min_photons_snr: float = _setting(5.0, low=0)
    prescreen_sigma: float = _setting(3.0, low=0)
    parallel: bool = True


@dataclass(frozen=True)
class DriftSettings:
    method: str = _setting("auto", choices=("auto", "spots", "registration"))
    rotation: bool = True
    rotation_smoothing_frames: int = _setting(10, low=1, high=10_000)
    reference_spots: str = ""
    min_spots: int = _setting(3, low=1)
    correlation_upsample: int = _setting(50, low=1, high=1000)
    refit_jump_px: float = _setting(1.0, low=0, low_open=True)


@dataclass(frozen=True)
class IntegrationSettings:
    aperture_radius_px: float | None = _setting(None, low=0, low_open=True)
    annulus_inner_px: float | None = _setting(None, low=0, low_open=True)
    annulus_outer_px: float | None = _setting(None, low=0, low_open=True)


@dataclass(frozen=True)
class BlinkingSettings:
    on_level_fraction: float = _setting(0.5, low=0, high=1, low_open=True, high_open=True)
    min_significance: float = _setting(4.0, low=0)
    level_rate_up: float = _setting(0.2, low=0, high=1, low_open=True)
    level_rate_down: float = _setting(0.02, low=0, high=1, low_open=True)
    # Refined states (plstream.analysis.intermittency): change points, levels, decoded states.
    segment_signal: str = "weighted"
    change_point_penalty: float = _setting(14.0, low=0, low_open=True)
    switch_cost: float = _setting(1.0, low=0)
    lag_frames: int = _setting(100, low=1, high=100_000)
    max_window_frames: int = _setting(400, low=2, high=1_000_000)
    update_every_frames: int = _setting(100, low=1, high=100_000)
    on_fraction: float = _setting(0.5, low=0, high=1, low_open=True, high_open=True)
    off_fraction: float = _setting(0.2, low=0, high=1, low_open=True, high_open=True)
    gray_min_frames: int = _setting(5, low=1)
    gray_min_total_frames: int = _setting(20, low=1)
    bleach_min_frames: int = _setting(100, low=0)


@dataclass(frozen=True)
class OutputSettings:
    flush_interval_s: float = _setting(1.0, low=0, high=3600, low_open=True)
    overwrite: bool = False


@dataclass(frozen=True)
class StreamSettings:
    endpoint: str = _setting("tcp://127.0.0.1:5555", endpoint=True)
    monitor_endpoint: str = _setting("", endpoint=True, empty_ok=True)
    send_hwm: int = _setting(8, low=1)
    live_queue_frames: int = _setting(256, low=1)
    live_queue_mb: float = _setting(512.0, low=1, high=1_048_576)
    silence_warning_s: float = _setting(5.0, low=0, low_open=True)
    peer_timeout_s: float = _setting(60.0, low=0, low_open=True)
    ready_timeout_s: float = _setting(600.0, low=0, low_open=True)
    max_frame_mb: float = _setting(256.0, low=0, high=65536, low_open=True)
    heartbeat_interval_s: float = _setting(1.0, low=0, low_open=True)


@dataclass(frozen=True)
class LiveSettings:
    """Serving results to live dashboards (``[live]`` in default.toml)."""

    endpoint: str = _setting("tcp://127.0.0.1:0", endpoint=True, empty_ok=True)
    image_interval_s: float = _setting(0.1, low=0)
    mean_interval_s: float = _setting(1.0, low=0)
    linger_s: float = _setting(1.0, low=0)
    max_reply_mb: float = _setting(4.0, low=0.0625, high=1024)
    max_queued_mb: float = _setting(64.0, low=1, high=1_048_576)


@dataclass(frozen=True)
class SecuritySettings:
    """CURVE keys for the endpoints other machines can reach (``[security]``; ``plstream keys``)."""

    keys_dir: str = ""
    allowed_dir: str = ""
    server_key: str = ""


@dataclass(frozen=True)
class RecordingSettings:
    """Writing every raw frame that arrives to an OME-TIFF (``[recording]``; ``--record``)."""

    enabled: bool | None = None
    path: str = ""
    queue_mb: float = _setting(512.0, low=1, high=1_048_576)


@dataclass(frozen=True)
class SimulationSettings:
    shape_px: tuple[int, int] = _setting((256, 256), low=8, high=16384)
    n_frames: int = _setting(1000, low=1)
    n_emitters: int = _setting(60, low=0)
    photons_per_frame: float = _setting(2000.0, low=0)
    background_photons: float = _setting(20.0, low=0)
    psf_sigma_px: float = _setting(1.3, low=0.3, high=50)
    drift_max_px: float = _setting(3.0, low=0)
    rotation_max_deg: float = _setting(0.0, low=0, high=180)
    contrast: str = _setting("bright", choices=("bright", "dark"))
    frame_rate_hz: float = _setting(100.0, low=0, low_open=True)
    paced: bool = True
    seed: int = _setting(0, low=0)
    on_exponent: float = _setting(1.6, low=0)
    off_exponent: float = _setting(1.5, low=0)
    on_truncation_frames: float = _setting(300.0, low=0)
    off_truncation_frames: float = _setting(300.0, low=0)
    bleach_on_frames: float = _setting(3000.0, low=0)


@dataclass(frozen=True)
class Settings:
    """All settings of a run, one frozen section per concern."""

    schema_version: int = SCHEMA_VERSION
    camera: CameraSettings = field(default_factory=CameraSettings)
    psf: PsfSettings = field(default_factory=PsfSettings)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    integration: IntegrationSettings = field(default_factory=IntegrationSettings)
    blinking: BlinkingSettings = field(default_factory=BlinkingSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)

    def __post_init__(self) -> None:
        for section in dataclasses.fields(self):
            if section.name != "schema_version":
                _check_section(section.name, getattr(self, section.name))
        _check_consistency(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (``None`` written as ``"auto"``, tuples as lists), e.g. for the result file."""
        out = _plain(dataclasses.asdict(self))
        assert isinstance(out, dict)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, section: str, **changes: Any) -> Settings:
        """Return a copy with some keys of one section changed (used by the CLI's flags)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def _check_type(where: str, value: Any, annotation: Any) -> None:
    """Raise SettingsError unless ``value`` has the setting's type (bool is not a number, an int is a float)."""
    section, key = where.split(".", 1)
    try:
        coerced = _coerce(section, key, value, annotation)
    except SettingsError as exc:
        raise SettingsError(f"{exc} (in code: Settings.replace or a section built by hand)") from None
    if coerced != value and not (value is None or isinstance(value, (int, float))):
        raise SettingsError(f"{where} has the wrong type: {value!r}")


def _check_consistency(settings: Settings) -> None:
    """Rules between keys: the photometry annulus lies outside the aperture; the silence warning comes first."""
    i = settings.integration
    radii = [
        ("aperture_radius_px", i.aperture_radius_px),
        ("annulus_inner_px", i.annulus_inner_px),
        ("annulus_outer_px", i.annulus_outer_px),
    ]
    given = [(k, v) for k, v in radii if v is not None]
    for (k1, v1), (k2, v2) in itertools.pairwise(given):
        if not v1 < v2:
            raise SettingsError(
                f"integration.{k1} = {v1:g} must be smaller than integration.{k2} = {v2:g} "
                "(aperture < annulus inner < annulus outer radius)"
            )
    s = settings.stream
    if s.silence_warning_s > s.peer_timeout_s:
        raise SettingsError(
            f"stream.silence_warning_s = {s.silence_warning_s:g} must not exceed stream.peer_timeout_s = "
            f"{s.peer_timeout_s:g} (the warning comes before giving up)"
        )


def _plain(value: Any) -> Any:
    """Settings values as TOML/JSON would write them: None as "auto", tuples as lists, recursively."""
    if value is None:
        return AUTO
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _is_table(annotation: Any) -> bool:
    """A free-form table of settings (``dict[str, ...]``), e.g. GenICam nodes passed through by name."""
    return typing.get_origin(annotation) is dict


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Check and convert one TOML value against the dataclass annotation."""
    where = f"{section}.{key}"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value == AUTO or value is None:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a table of name = value pairs, got {value!r}")
        for name, item in value.items():
            if isinstance(item, (dict, list)) or item is None:
                raise SettingsError(f"{where}.{name} must be a number, a string or true/false, got {item!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise SettingsError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(section, key, v, a) for v, a in zip(value, args))
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, got {value!r}")
        return value
    raise SettingsError(f"{where}: unsupported setting type {annotation!r}")  # pragma: no cover


def _merge(
    tree: dict[str, Any], layer: dict[str, Any], origin: str, cls: type = Settings, prefix: str = ""
) -> dict[str, Any]:
    """``layer``'s keys merged into a copy of ``tree``, each checked against the dataclass ``cls``."""
    merged = dict(tree)
    hints = typing.get_type_hints(cls)
    for key, value in layer.items():
        if not prefix and key == "schema_version":
            if value != SCHEMA_VERSION:
                raise SettingsError(
                    f"{origin}: schema_version {value} is not supported (this plstream reads "
                    f"{SCHEMA_VERSION}); compare your file with config/default.toml"
                )
            continue
        where = prefix + key
        if key not in hints or key == "schema_version":
            known = sorted(k for k in hints if k != "schema_version")
            if not prefix:
                raise SettingsError(f"{origin}: unknown section [{key}]; valid sections: {', '.join(known)}")
            raise SettingsError(f"{origin}: unknown setting {where}; valid keys in [{prefix[:-1]}]: {', '.join(known)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingsError(f"{origin}: [{where}] must be a table of settings")
            merged[key] = _merge(merged.get(key, {}), value, origin, typing.cast(type, annotation), where + ".")
        elif _is_table(annotation) and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _build(tree: dict[str, Any], cls: type = Settings, prefix: str = "") -> Any:
    """The dataclass ``cls`` from a merged tree (missing keys keep their defaults)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in tree.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            values[key] = _build(value, typing.cast(type, annotation), f"{prefix}{key}.")
        else:
            values[key] = _coerce(prefix.rstrip(".") or key, key, value, annotation) if prefix else value
    return cls(**values)


def _parse_override(text: str) -> dict[str, Any]:
    """``section.key=value`` (or ``section.sub.key=value``) as a nested dict."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise SettingsError(f"--set {text!r}: write it as section.key=value, e.g. detection.threshold_sigma=6")
    dotted, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word, e.g. auto or an endpoint
    layer: dict[str, Any] = {}
    node = layer
    *sections, key = [part.strip() for part in dotted.strip().split(".")]
    for name in sections:
        node = node.setdefault(name, {})
    node[key] = value
    return layer


def default_settings() -> Settings:
    """The settings in the packaged ``default.toml``."""
    return load_settings()


def load_settings(
    user_file: str | Path | None = None, overrides: list[str] | None = None, *, saved_json: str | None = None
) -> Settings:
    """Load the defaults, then a user's TOML file, then ``section.key=value`` overrides.

    Parameters
    ----------
    user_file : path, optional
        A TOML file with the same sections as ``default.toml``; only changed keys needed.
    overrides : list of str, optional
        ``section.key=value`` strings (values in TOML syntax; bare words are strings).
    saved_json : str, optional
        Settings saved by :meth:`Settings.to_json` (a result file's ``settings_json``,
        to resume its analysis): they take the defaults' place, below the file and overrides.

    Returns
    -------
    Settings

    Raises
    ------
    SettingsError
        Unknown section or key, wrong type, unreadable file; the message says which and how to fix it.
    """
    text = resources.files("plstream.config").joinpath("default.toml").read_text(encoding="utf-8")
    tree = _merge({}, tomllib.loads(text), "default.toml")
    if saved_json is not None:
        try:
            saved = json.loads(saved_json)
        except ValueError as exc:
            raise SettingsError(f"the saved settings are not valid JSON ({exc})") from None
        tree = _merge(tree, saved if isinstance(saved, dict) else {}, "the saved settings")
    if user_file is not None:
        path = Path(user_file)
        try:
            layer = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read settings file ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML ({exc})") from None
        tree = _merge(tree, layer, str(path))
    for text_override in overrides or []:
        tree = _merge(tree, _parse_override(text_override), f"--set {text_override}")
    built: Settings = _build(tree)
    return built
