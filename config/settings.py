"""Typed, frozen settings loaded in layers: defaults < user TOML < ``--set``.

The defaults live in ``default.toml`` next to this module; every key a user may
set appears there with its unit and meaning. A value of ``"auto"`` in TOML is
``None`` here: the analysis takes it from the stream or estimates it.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "SettingsError",
    "Settings",
    "CameraSettings",
    "PsfSettings",
    "DetectionSettings",
    "FitSettings",
    "DriftSettings",
    "IntegrationSettings",
    "BlinkingSettings",
    "OutputSettings",
    "StreamSettings",
    "LiveSettings",
    "SimulationSettings",
    "load_settings",
    "default_settings",
]

SCHEMA_VERSION = 1
AUTO = "auto"


class SettingsError(ValueError):
    """A settings file or override is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class CameraSettings:
    offset_adu: float | None = None
    gain_adu_per_e: float | None = None
    read_noise_e: float | None = None
    assumed_read_noise_e: float = 1.5
    estimate_frames: int = 50


@dataclass(frozen=True)
class PsfSettings:
    sigma_px: float | None = None
    initial_sigma_px: float = 1.5


@dataclass(frozen=True)
class DetectionSettings:
    threshold_sigma: float = 5.0
    late_threshold_sigma: float = 6.0
    every_frames: int = 10
    late_band_px: int = 128
    match_radius_px: float = 2.0
    border_px: int = 3


@dataclass(frozen=True)
class FitSettings:
    roi_size_px: int | None = None
    max_iterations: int = 20
    min_photons_snr: float = 5.0
    prescreen_sigma: float = 3.0
    parallel: bool = True


@dataclass(frozen=True)
class DriftSettings:
    min_spots: int = 3
    correlation_upsample: int = 50
    refit_jump_px: float = 1.0


@dataclass(frozen=True)
class IntegrationSettings:
    aperture_radius_px: float | None = None
    annulus_inner_px: float | None = None
    annulus_outer_px: float | None = None


@dataclass(frozen=True)
class BlinkingSettings:
    on_level_fraction: float = 0.5
    min_significance: float = 4.0
    level_rate_up: float = 0.2
    level_rate_down: float = 0.02


@dataclass(frozen=True)
class OutputSettings:
    flush_interval_s: float = 1.0
    overwrite: bool = False


@dataclass(frozen=True)
class StreamSettings:
    endpoint: str = "tcp://127.0.0.1:5555"
    monitor_endpoint: str = ""
    send_hwm: int = 8
    live_queue_frames: int = 256
    silence_warning_s: float = 5.0
    peer_timeout_s: float = 60.0
    max_frame_mb: float = 256.0
    heartbeat_interval_s: float = 1.0


@dataclass(frozen=True)
class LiveSettings:
    """Serving results to live dashboards (``[live]`` in default.toml)."""

    endpoint: str = "tcp://127.0.0.1:0"
    image_interval_s: float = 0.1
    mean_interval_s: float = 1.0
    linger_s: float = 1.0


@dataclass(frozen=True)
class SimulationSettings:
    shape_px: tuple[int, int] = (256, 256)
    n_frames: int = 1000
    n_emitters: int = 60
    photons_per_frame: float = 2000.0
    background_photons: float = 20.0
    psf_sigma_px: float = 1.3
    drift_max_px: float = 3.0
    frame_rate_hz: float = 100.0
    paced: bool = True
    seed: int = 0


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
    simulation: SimulationSettings = field(default_factory=SimulationSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (``None`` written as ``"auto"``), e.g. for the result file."""

        def plain(value: Any) -> Any:
            if value is None:
                return AUTO
            if isinstance(value, tuple):
                return list(value)
            return value

        out: dict[str, Any] = {"schema_version": self.schema_version}
        for section in dataclasses.fields(self):
            if section.name == "schema_version":
                continue
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {k: plain(v) for k, v in values.items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, section: str, **changes: Any) -> "Settings":
        """Return a copy with some keys of one section changed (used by the CLI's flags)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {name: tp for name, tp in hints.items() if name != "schema_version"}


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


def _merge(base: dict[str, Any], layer: dict[str, Any], origin: str) -> dict[str, Any]:
    sections = _section_types()
    merged = {name: dict(values) for name, values in base.items() if isinstance(values, dict)}
    for name, values in layer.items():
        if name == "schema_version":
            if values != SCHEMA_VERSION:
                raise SettingsError(
                    f"{origin}: schema_version {values} is not supported (this plstream reads "
                    f"{SCHEMA_VERSION}); compare your file with config/default.toml"
                )
            continue
        if name not in sections:
            raise SettingsError(
                f"{origin}: unknown section [{name}]; valid sections: {', '.join(sorted(sections))}"
            )
        if not isinstance(values, dict):
            raise SettingsError(f"{origin}: [{name}] must be a table of settings")
        known = {f.name for f in dataclasses.fields(sections[name])}
        for key, value in values.items():
            if key not in known:
                raise SettingsError(
                    f"{origin}: unknown setting {name}.{key}; valid keys in [{name}]: "
                    f"{', '.join(sorted(known))}"
                )
            merged.setdefault(name, {})[key] = value
    return merged


def _build(tree: dict[str, Any]) -> Settings:
    sections = _section_types()
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        hints = typing.get_type_hints(cls)
        values = tree.get(name, {})
        built[name] = cls(**{k: _coerce(name, k, v, hints[k]) for k, v in values.items()})
    return Settings(**built)


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise SettingsError(f"--set {text!r}: write it as section.key=value, e.g. detection.threshold_sigma=6")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word, e.g. auto or an endpoint
    return section, key, value


def default_settings() -> Settings:
    """The settings in the packaged ``default.toml``."""
    return load_settings()


def load_settings(user_file: str | Path | None = None, overrides: list[str] | None = None) -> Settings:
    """Load the defaults, then a user's TOML file, then ``section.key=value`` overrides.

    Parameters
    ----------
    user_file : path, optional
        A TOML file with the same sections as ``default.toml``; only changed keys needed.
    overrides : list of str, optional
        ``section.key=value`` strings (values in TOML syntax; bare words are strings).

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
        section, key, value = _parse_override(text_override)
        tree = _merge(tree, {section: {key: value}}, f"--set {text_override}")
    return _build(tree)
