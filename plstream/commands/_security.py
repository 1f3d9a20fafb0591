"""The security policy of a command: this machine's keys (``[security]``), ``--server-key`` and ``--insecure``."""

from __future__ import annotations

import argparse
from pathlib import Path

from plstream.config import Settings
from plstream.stream.security import Security, default_keys_dir

__all__ = ["keys_dir", "security_from", "view_command"]


def keys_dir(args: argparse.Namespace, settings: Settings) -> Path:
    """``--dir``, else ``security.keys_dir``, else ``$XDG_CONFIG_HOME/plstream/keys``."""
    given = getattr(args, "dir", None) or settings.security.keys_dir
    return Path(given).expanduser() if given else default_keys_dir()


def security_from(args: argparse.Namespace, settings: Settings) -> Security:
    """The policy of this command's sockets, from the settings and the flags it has."""
    allowed = settings.security.allowed_dir
    return Security(
        keys_dir(args, settings),
        Path(allowed).expanduser() if allowed else None,
        server_key=getattr(args, "server_key", None) or settings.security.server_key,
        insecure=bool(getattr(args, "insecure", False)),
    )


def view_command(endpoint: str, server_key: str | None) -> str:
    """The command that opens a dashboard on the live results at ``endpoint`` (with the key when encrypted)."""
    key = f" --server-key '{server_key}'" if server_key else ""
    return f"plstream dashboard --connect {endpoint}{key}"
