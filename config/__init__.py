"""plstream.config: typed, layered settings (defaults < user TOML < --set)."""

from plstream.config.settings import (
    SCHEMA_VERSION,
    BlinkingSettings,
    CameraSettings,
    DetectionSettings,
    DriftSettings,
    FitSettings,
    IntegrationSettings,
    LiveSettings,
    OutputSettings,
    PsfSettings,
    Settings,
    SettingsError,
    SimulationSettings,
    StreamSettings,
    default_settings,
    load_settings,
)

__all__ = [
    "SCHEMA_VERSION",
    "BlinkingSettings",
    "CameraSettings",
    "DetectionSettings",
    "DriftSettings",
    "FitSettings",
    "IntegrationSettings",
    "LiveSettings",
    "OutputSettings",
    "PsfSettings",
    "Settings",
    "SettingsError",
    "SimulationSettings",
    "StreamSettings",
    "default_settings",
    "load_settings",
]
