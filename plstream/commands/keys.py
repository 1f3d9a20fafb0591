"""``plstream keys init | allow | show``: this machine's CURVE key pair and the peers it admits.

Where they live and what they protect: :mod:`plstream.stream.security` and
``docs/wire_format.md`` (section "Security").
"""

from __future__ import annotations

import argparse
import re
import socket

from plstream.commands._security import keys_dir, security_from
from plstream.config import Settings, load_settings
from plstream.errors import EXIT_ERROR, EXIT_OK
from plstream.stream.security import (
    PUBLIC_FILE,
    SECRET_FILE,
    allow_key,
    allowed_keys,
    check_secret_file,
    init_keys,
    read_public_key,
)

__all__ = ["keys"]


def keys(args: argparse.Namespace) -> int:
    """Run ``plstream keys SUBCOMMAND``."""
    settings = load_settings(args.settings, args.overrides)
    action = {"init": _init, "allow": _allow, "show": _show}[args.keys_command]
    return action(args, settings)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    folder = keys_dir(args, settings)
    pair = init_keys(folder, force=args.force)
    allowed = security_from(args, settings).allowed
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-")[:64] or "this-machine"
    print(f"plstream: made this machine's key pair in {folder}")
    print(f"public key: '{pair.public_text}' ({folder / PUBLIC_FILE})")
    print(f"secret key: {folder / SECRET_FILE} (mode 0600; it never leaves this machine)")
    print(f"allowed keys: {allowed} ({len(allowed_keys(allowed))})")
    print("next, on each machine that connects to this one or that this one connects to:")
    print(f"  plstream keys allow '{pair.public_text}' --name {name}")
    print("and here, the same with that machine's key (plstream keys show prints it)")
    return EXIT_OK


def _allow(args: argparse.Namespace, settings: Settings) -> int:
    policy = security_from(args, settings)
    name, added = allow_key(policy.allowed, args.key, args.name)
    key = read_public_key(args.key).decode("ascii")
    if added:
        print(f"plstream: allowed '{key}' as {name} ({policy.allowed / (name + '.key')})")
        print(
            "servers here admit it from its next connection (running ones too); clients here take it as the "
            "server's key when it is the only one allowed (else: --server-key NAME)"
        )
    else:
        print(f"plstream: '{key}' was allowed already, as {name}")
    return EXIT_OK


def _show(args: argparse.Namespace, settings: Settings) -> int:
    policy = security_from(args, settings)
    public = policy.keys_dir / PUBLIC_FILE
    status = EXIT_OK
    if public.is_file():
        print(f"this machine: '{read_public_key(public).decode('ascii')}' ({public})")
        secret = policy.keys_dir / SECRET_FILE
        if secret.is_file():
            check_secret_file(secret)
        else:
            print(f"plstream: warning: {secret} is missing: make a new pair with plstream keys init --force")
            status = EXIT_ERROR
    else:
        print(f"this machine: no key pair in {policy.keys_dir} (make one with: plstream keys init)")
        status = EXIT_ERROR
    allowed = allowed_keys(policy.allowed)
    print(f"allowed ({policy.allowed}): {len(allowed)}")
    width = max((len(name) for name in allowed), default=0)
    for name, key in allowed.items():
        print(f"  {name:<{width}}  '{key.decode('ascii')}'")
    return status
