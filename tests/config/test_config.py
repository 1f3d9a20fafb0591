"""Settings: the packaged defaults, layering, and errors that name the fix."""

import dataclasses
import tomllib
from importlib import resources

import pytest

from plstream.config import Settings, SettingsError, load_settings


def _default_toml() -> str:
    return resources.files("plstream.config").joinpath("default.toml").read_text(encoding="utf-8")


def test_default_toml_matches_the_dataclass_defaults():
    """default.toml documents every setting; its values are the dataclass defaults."""
    from_file = load_settings().to_dict()
    from_code = Settings().to_dict()
    assert from_file == from_code, "config/default.toml and config/settings.py disagree; make them match"


def test_every_setting_in_default_toml_has_a_comment():
    lines = _default_toml().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#") and not line.startswith("schema_version"):
            above = lines[i - 1].strip()
            assert above.startswith("#") or above.endswith("...") or "=" in above, f"undocumented: {line}"


def test_every_dataclass_field_appears_in_default_toml():
    def compare(section, table, where):
        keys = {f.name for f in dataclasses.fields(section)}
        assert keys == set(table), f"[{where}] in default.toml lacks or has extra keys: {sorted(keys ^ set(table))}"
        for f in dataclasses.fields(section):
            if dataclasses.is_dataclass(getattr(section, f.name)):
                compare(getattr(section, f.name), table[f.name], f"{where}.{f.name}")

    tree = tomllib.loads(_default_toml())
    settings = Settings()
    for section in dataclasses.fields(Settings):
        if section.name != "schema_version":
            compare(getattr(settings, section.name), tree[section.name], section.name)


def test_layers_user_file_then_overrides(tmp_path):
    user = tmp_path / "my.toml"
    user.write_text("[detection]\nthreshold_sigma = 7.0\n[camera]\noffset_adu = 99\n")
    s = load_settings(user, ["detection.threshold_sigma=6.5", "stream.endpoint=tcp://127.0.0.1:6000"])
    assert s.detection.threshold_sigma == 6.5
    assert s.camera.offset_adu == 99.0
    assert s.camera.gain_adu_per_e is None  # "auto"
    assert s.stream.endpoint == "tcp://127.0.0.1:6000"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("detection.threshold=5", "unknown setting detection.threshold"),
        ("detektion.threshold_sigma=5", "unknown section [detektion]"),
        ("detection.threshold_sigma=high", "must be a number"),
        ("detection.every_frames=2.5", "must be a whole number"),
        ("output.overwrite=1", "must be true or false"),
        ("threshold_sigma=5", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, fragment):
    with pytest.raises(SettingsError, match=None) as info:
        load_settings(overrides=[override])
    assert fragment in str(info.value)


def test_bad_user_files(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[detection\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken)
    future = tmp_path / "future.toml"
    future.write_text("schema_version = 99\n")
    with pytest.raises(SettingsError, match="schema_version 99"):
        load_settings(future)


def test_settings_round_trip_through_json():
    s = load_settings(overrides=["psf.sigma_px=1.2"])
    d = s.to_dict()
    assert d["psf"]["sigma_px"] == 1.2 and d["camera"]["offset_adu"] == "auto"
    assert s.to_json().startswith("{")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("detection.threshold_sigma=-1", "detection.threshold_sigma = -1.0 is not allowed: it must be > 0"),
        ("blinking.on_level_fraction=1", "blinking.on_level_fraction = 1.0 is not allowed: it must be between 0 and 1"),
        (
            "fit.roi_size_px=8",
            "fit.roi_size_px = 8 is not allowed: it must be between 3 and 101 (3 <= x <= 101) and odd",
        ),
        ("stream.endpoint=localhost", "stream.endpoint = 'localhost' is not allowed: it must be a ZeroMQ endpoint"),
        ("simulation.shape_px=[4, 300]", "simulation.shape_px = (4, 300) is not allowed"),
        ("psf.sigma_px=nan", "psf.sigma_px = nan is not allowed"),
        ("camera.offset_adu=inf", "camera.offset_adu = inf is not allowed: it must be a finite number"),
        ("stream.peer_timeout_s=1", "must not exceed stream.peer_timeout_s"),
        ("integration.annulus_outer_px=3", "integration.aperture_radius_px"),
    ],
)
def test_values_out_of_range_name_the_key_and_the_allowed_range(override, fragment):
    overrides = [override, "integration.aperture_radius_px=4"] if "annulus" in override else [override]
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=overrides)
    assert fragment in str(info.value)


def test_settings_changed_in_code_are_checked_too():
    settings = Settings()
    with pytest.raises(SettingsError, match="detection.threshold_sigma = -3 is not allowed"):
        settings.replace("detection", threshold_sigma=-3)
    with pytest.raises(SettingsError, match="output.overwrite must be true or false"):
        settings.replace("output", overwrite="yes")


def _leaf_fields(section, where):
    """(dotted name, field) of every setting in a section and its sub-sections."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, f"{where}.{f.name}")
        else:
            yield f"{where}.{f.name}", f


def test_every_numeric_and_endpoint_setting_declares_its_allowed_values():
    """A new setting cannot slip in unchecked: numbers and endpoints carry an explicit range or form."""
    settings = Settings()
    for section in dataclasses.fields(Settings):
        if section.name == "schema_version":
            continue
        for name, f in _leaf_fields(getattr(settings, section.name), section.name):
            kind = str(f.type)
            if "bool" in kind or "dict" in kind or ("str" in kind and "endpoint" not in f.name):
                continue
            assert "allowed" in f.metadata, f"{name} has no declared range: use _setting(...)"


def test_nested_sections_and_free_tables_layer_like_the_others(tmp_path):
    user = tmp_path / "scope.toml"
    user.write_text(
        '[camera.genicam]\ncti = "/opt/producer.cti"\nexposure_us = 5000\n'
        "[camera.genicam.nodes]\nGain = 2.0\nReverseX = true\n"
    )
    s = load_settings(user, ["camera.genicam.nodes.Gain=3", "camera.genicam.device=SN42"])
    assert s.camera.genicam.cti == "/opt/producer.cti" and s.camera.genicam.device == "SN42"
    assert s.camera.genicam.exposure_us == 5000.0 and s.camera.genicam.frame_rate_hz is None
    assert s.camera.genicam.nodes == {"Gain": 3, "ReverseX": True}
    assert s.to_dict()["camera"]["genicam"]["nodes"] == {"Gain": 3, "ReverseX": True}
    assert s.to_dict()["camera"]["genicam"]["roi_px"] == "auto"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("camera.genicam.exposur_us=5", "unknown setting camera.genicam.exposur_us; valid keys in [camera.genicam]"),
        ("camera.genicam=5", "[camera.genicam] must be a table of settings"),
        ("camera.genicam.nodes.Gain=[1, 2]", "camera.genicam.nodes.Gain must be a number, a string or true/false"),
        ("camera.genicam.roi_px=[0, 0, 64]", "camera.genicam.roi_px must be a list of 4 values"),
        (
            "camera.micromanager.binning=0",
            "camera.micromanager.binning = 0 is not allowed: it must be between 1 and 64",
        ),
    ],
)
def test_bad_nested_settings_name_the_full_key(override, fragment):
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=[override])
    assert fragment in str(info.value)
