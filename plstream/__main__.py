"""Allow ``python -m plstream``."""

from plstream.cli import entry

entry()
