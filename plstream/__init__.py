"""plstream: streaming, real-time analysis of blinking single-nanoparticle PL movies.

``plstream.__version__`` is looked up in the installed package's metadata on
first use (that look-up costs ~40 ms, which ``plstream --help`` need not pay).
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plstream")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'plstream' has no attribute {name!r}")
