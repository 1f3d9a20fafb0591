"""plstream: streaming, real-time analysis of blinking single-nanoparticle PL movies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("plstream")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
