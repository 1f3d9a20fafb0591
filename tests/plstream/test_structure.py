"""The package's shape: what start-up imports, what the lazy faces export, and what gets installed."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "numba", "scipy", "zmq", "h5py", "cv2", "tifffile", "skimage", "PySide6", "pyqtgraph")


def _imported_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter has imported after running ``code``."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_the_command_line_parser_imports_nothing_heavy():
    """``plstream --help`` must start fast: argparse only, no numerics, no sockets, no Qt."""
    loaded = _imported_after("from plstream.cli import build_parser; build_parser().format_help()")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "package",
    ["plstream.acquire_adapters", "plstream.stream", "plstream.analysis", "plstream.dashboard", "plstream.config"],
)
def test_importing_a_package_compiles_and_loads_nothing_heavy(package):
    loaded = _imported_after(f"import {package}")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "package", ["plstream.acquire_adapters", "plstream.stream", "plstream.analysis", "plstream.dashboard"]
)
def test_every_name_a_lazy_package_lists_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}/__init__.pyi lists names that do not exist: {missing}"


def test_every_package_folder_is_installed():
    """Each folder with an __init__.py under a mapped root is in pyproject's package list (else it is not shipped)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == listed, (
        f"add to [tool.setuptools] packages: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    )
