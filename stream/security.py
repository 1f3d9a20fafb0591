"""CURVE encryption and key-based admission for the endpoints other machines can reach.

The rule, the same at both ends of a connection so that neither needs to be
told what the other does: an endpoint only this machine can reach (``ipc://``,
``inproc://``, ``127.0.0.0/8``, ``::1``, ``localhost``) is plaintext, as a
local ``plstream run`` always was; every other TCP endpoint is encrypted and
authenticated with ZeroMQ's CURVE. The side that **binds** is the CURVE
server: it proves itself with this machine's secret key and admits only the
clients whose public keys are in its *allowed* folder (a ZAP handler checks
each handshake; a stranger's handshake fails with ``HANDSHAKE_FAILED_AUTH``
and it receives nothing). The side that **connects** is the CURVE client: it
uses this machine's key pair and must know the server's public key (given
with ``--server-key``, else the only key in the allowed folder).

Files (``plstream keys init`` / ``allow`` / ``show`` manage them)::

    $XDG_CONFIG_HOME/plstream/keys/     mode 0700 (default ~/.config/plstream/keys)
        plstream.key                    this machine's public certificate (give it to peers)
        plstream.key_secret             its secret certificate, mode 0600
        allowed/                        mode 0700: NAME.key, one public certificate per allowed peer

They are ZeroMQ certificate files (the ZPL format of ``zmq.auth``). Secrets
readable by the group or others, and an allowed folder that is missing or
empty when it is needed, stop a server before it binds, with a message that
says what to do (``zmq.auth`` itself would write a secret with mode 0644, and
would only log a bad folder and then refuse everyone).

:class:`Security` is the policy (folders, the server key, ``--insecure``);
:meth:`Security.on` gives the :class:`SocketSecurity` of one ZeroMQ context,
which the socket classes take as ``security=`` and which runs that context's
ZAP handler. A socket given no ``SocketSecurity`` may use loopback endpoints
only (:func:`~plstream.stream.endpoints.secure_socket`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from plstream.stream.endpoints import SecurityError, reachable_by_others

__all__ = [
    "PUBLIC_FILE",
    "SECRET_FILE",
    "ZAP_DOMAIN",
    "KeyPair",
    "Security",
    "SecurityError",
    "SocketSecurity",
    "allow_key",
    "allowed_keys",
    "check_secret_file",
    "default_keys_dir",
    "init_keys",
    "load_key_pair",
    "read_public_key",
]

logger = logging.getLogger(__name__)

PUBLIC_FILE = "plstream.key"
SECRET_FILE = "plstream.key_secret"
ALLOWED_FOLDER = "allowed"
ZAP_DOMAIN = "plstream"
_KEY_CHARS = 40  # a Z85-encoded 32-byte CURVE key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SETUP = (
    "'plstream keys init' on each machine, then 'plstream keys allow KEY --name NAME' with the other machine's "
    "public key ('plstream keys show' prints it)"
)


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, Z85-encoded (40 characters each)."""

    public: bytes
    secret: bytes = field(repr=False)

    @property
    def public_text(self) -> str:
        return self.public.decode("ascii")


# ---------------------------------------------------------------------------------------------- key files
def default_keys_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/plstream/keys``, or ``~/.config/plstream/keys`` without it.

    Examples
    --------
    >>> default_keys_dir({"XDG_CONFIG_HOME": "/etc/xdg"}).as_posix()
    '/etc/xdg/plstream/keys'
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "plstream" / "keys"


def _private_folder(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: only this user may list or change the keys."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name != "nt":
        path.chmod(0o700)


def _certificate_text(public: bytes, secret: bytes | None = None) -> str:
    """A ZeroMQ certificate (ZPL), as ``zmq.auth.load_certificate`` and czmq read it."""
    kind = "**Secret** Certificate" if secret else "Public Certificate"
    lines = [
        f"#   ****  Generated on {_dt.datetime.now().isoformat(timespec='seconds')} by plstream  ****",
        f"#   ZeroMQ CURVE {kind}",
        "#   DO NOT GIVE THIS FILE TO ANYONE; it must stay readable by its owner only (mode 0600)."
        if secret
        else "#   Give it to the machines that should accept this one ('plstream keys allow').",
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_file(path: Path, text: str, mode: int, *, replace: bool) -> None:
    """Write ``text`` to ``path`` created with ``mode`` from the start (never briefly more open)."""
    if not replace:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with os.fdopen(os.open(path, flags, mode), "w", encoding="utf-8") as f:
            f.write(text)
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def init_keys(keys_dir: str | os.PathLike[str], *, force: bool = False) -> KeyPair:
    """Make this machine's key pair in ``keys_dir`` (0700): ``plstream.key`` and ``plstream.key_secret`` (0600).

    Also creates the (empty) allowed folder ``keys_dir/allowed``. The public
    key never starts with ``-``, so that it can be pasted as a command-line
    argument.

    Raises
    ------
    SecurityError
        A key pair is there already and ``force`` is false (peers that allowed
        its public key would no longer accept this machine after a new one).
    """
    folder = Path(keys_dir)
    public_path, secret_path = folder / PUBLIC_FILE, folder / SECRET_FILE
    if not force and (public_path.exists() or secret_path.exists()):
        raise SecurityError(
            f"{folder} already holds a key pair; it was kept (machines that allowed its public key would reject a "
            "new one). Use --force to replace it, then give the new public key to those machines again"
        )
    _private_folder(folder)
    _private_folder(folder / ALLOWED_FOLDER)
    public, secret = zmq.curve_keypair()
    while public.startswith(b"-"):  # Z85 has '-': such a key pasted on a command line would read as an option
        public, secret = zmq.curve_keypair()
    _write_file(secret_path, _certificate_text(public, secret), 0o600, replace=force)
    _write_file(public_path, _certificate_text(public), 0o644, replace=force)
    return KeyPair(public, secret)


def check_secret_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`SecurityError` if the secret key file ``path`` is readable or writable by group or others."""
    if os.name == "nt":  # no POSIX modes; the user's profile folder is private
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise SecurityError(
            f"the secret key file {path} can be read by other users (mode {mode:04o}); make it private with: "
            f"chmod 600 {path} (and make a new key pair with 'plstream keys init --force' if others may have read it)"
        )


def _check_folder(path: Path, what: str) -> None:
    """Refuse a keys folder that other users may change (they could add their own key)."""
    if os.name == "nt":
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o022:
        raise SecurityError(f"the {what} {path} can be changed by other users (mode {mode:04o}); run: chmod 700 {path}")


def load_key_pair(keys_dir: str | os.PathLike[str]) -> KeyPair:
    """This machine's key pair from ``keys_dir``, after checking that the secret is private.

    Raises
    ------
    SecurityError
        No key pair there (run ``plstream keys init``), a secret readable by
        others, or a file that is not a certificate.
    """
    folder = Path(keys_dir)
    secret_path = folder / SECRET_FILE
    if not secret_path.is_file():
        raise SecurityError(f"there is no key pair in {folder}; make one with: plstream keys init")
    check_secret_file(secret_path)
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as exc:
        raise SecurityError(
            f"{secret_path} is not a key certificate ({exc}); make a new pair: plstream keys init --force"
        ) from None
    if secret is None or not _is_key(public) or not _is_key(secret):
        raise SecurityError(f"{secret_path} holds no valid secret key; make a new pair: plstream keys init --force")
    return KeyPair(public, secret)


def _is_key(key: bytes | str) -> bool:
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    if len(text) != _KEY_CHARS:
        return False
    try:
        return len(z85.decode(text)) == 32
    except (ValueError, KeyError, IndexError):
        return False


def read_public_key(key_or_file: str | os.PathLike[str]) -> bytes:
    """A public key given as its 40 Z85 characters or as a certificate file (public or secret: only the public
    key is taken).

    Raises
    ------
    SecurityError
        Neither a key nor a readable certificate.
    """
    text = os.fspath(key_or_file).strip()
    if _is_key(text) and not os.path.exists(text):
        return text.encode("ascii")
    try:
        public, _ = zmq.auth.load_certificate(text)
    except (OSError, ValueError) as exc:
        raise SecurityError(
            f"{text!r} is neither a public key (40 characters, as 'plstream keys show' prints) nor a key "
            f"certificate file ({exc})"
        ) from None
    if not _is_key(public):
        raise SecurityError(f"{text} holds no valid public key")
    return public


def allowed_keys(allowed_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """The allowed peers: ``{name: public key}`` from ``allowed_dir/NAME.key`` (files that are no certificate
    are logged and skipped); empty when the folder does not exist."""
    folder = Path(allowed_dir)
    keys: dict[str, bytes] = {}
    if not folder.is_dir():
        return keys
    for path in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            logger.warning("skipped %s in the allowed keys: %s", path, exc)
            continue
        if _is_key(public):
            keys[path.stem] = public
        else:
            logger.warning("skipped %s in the allowed keys: not a valid public key", path)
    return keys


def allow_key(allowed_dir: str | os.PathLike[str], key_or_file: str, name: str | None = None) -> tuple[str, bool]:
    """Add a peer's public key to ``allowed_dir`` as ``NAME.key``; returns ``(name, added)``.

    ``name`` defaults to the certificate file's name, or ``peer-`` and the
    key's first 4 bytes in hex. ``added`` is False when that key was allowed
    already (under the name returned).

    Raises
    ------
    SecurityError
        Not a key, a bad name, or the name taken by another key.
    """
    public = read_public_key(key_or_file)
    folder = Path(allowed_dir)
    current = allowed_keys(folder)
    for other, key in current.items():
        if key == public:
            return other, False
    if name is None:
        path = Path(key_or_file)
        stem = path.name.split(".", 1)[0] if path.exists() else ""
        name = stem if stem and _NAME.fullmatch(stem) and stem != "plstream" else f"peer-{z85.decode(public)[:4].hex()}"
    if not _NAME.fullmatch(name):
        raise SecurityError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, not starting with .)")
    if name in current or (folder / f"{name}.key").exists():
        raise SecurityError(f"a key named {name!r} is allowed already (another key); choose another --name")
    _private_folder(folder)
    _write_file(folder / f"{name}.key", _certificate_text(public), 0o644, replace=False)
    return name, True


# ---------------------------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class Security:
    """Which endpoints are encrypted, and with which keys.

    Parameters
    ----------
    keys_dir : Path
        This machine's key pair (``plstream keys init``).
    allowed_dir : Path, optional
        Public keys of the peers a server here admits (default ``keys_dir/allowed``).
    server_key : str
        Client side: the server's public key, as 40 Z85 characters, a certificate
        file or the name of an allowed key; ``""``: the only key in ``allowed_dir``.
        Given, it also encrypts a connection to a loopback endpoint (an SSH tunnel
        to a server that binds all interfaces).
    insecure : bool
        Use no encryption on endpoints other machines can reach (``--insecure``:
        a trusted network only); each such socket logs a warning.
    plaintext_loopback : bool
        Loopback and ipc endpoints stay plaintext (the default); False encrypts
        them too (the peers then need keys as well).
    """

    keys_dir: Path
    allowed_dir: Path | None = None
    server_key: str = ""
    insecure: bool = False
    plaintext_loopback: bool = True

    @property
    def allowed(self) -> Path:
        """The allowed folder in effect."""
        return self.allowed_dir if self.allowed_dir is not None else self.keys_dir / ALLOWED_FOLDER

    def wants_curve(self, endpoint: str, *, bind: bool) -> bool:
        """Whether a socket binding (or connecting) to ``endpoint`` uses CURVE under this policy."""
        if self.insecure:
            return False
        if "://" not in endpoint:  # not an endpoint: binding or connecting fails with ZeroMQ's own error
            return False
        local = self.plaintext_loopback and not reachable_by_others(endpoint)
        return not local or (not bind and bool(self.server_key))

    def on(self, context: zmq.Context) -> SocketSecurity:
        """The security of ``context``'s sockets (use as a context manager; close it before the context)."""
        return SocketSecurity(context, self)

    def preflight(self, endpoint: str, *, bind: bool, role: str) -> bool:
        """Check, before anything is opened, that ``endpoint`` can be secured; returns whether it uses CURVE.

        A server needs this machine's key pair (its secret private) and at least
        one allowed key; a client needs its key pair and the server's key.

        Raises
        ------
        SecurityError
            What is missing or unsafe, and how to set it up.
        """
        if not self.wants_curve(endpoint, bind=bind):
            return False
        verb, where = ("bind", "on") if bind else ("connect", "to")
        refusing = f"refusing to {verb} the {role} socket {where} {endpoint}"
        if not (self.keys_dir / SECRET_FILE).is_file():
            raise SecurityError(
                f"{refusing} without encryption: other machines can reach it, and there is no key pair in "
                f"{self.keys_dir}. Set up keys: {_SETUP}; or use a loopback endpoint (tcp://127.0.0.1:PORT); or, on "
                "a trusted network only, pass --insecure"
            )
        try:
            load_key_pair(self.keys_dir)
        except SecurityError as exc:
            raise SecurityError(f"{refusing}: {exc}") from None
        if not bind:
            try:
                self.resolve_server_key()
            except SecurityError as exc:
                raise SecurityError(f"{refusing}: {exc}") from None
            return True
        folder = self.allowed
        if not folder.is_dir() or not allowed_keys(folder):
            state = "does not exist" if not folder.is_dir() else "holds no keys"
            raise SecurityError(
                f"{refusing}: the allowed-keys folder {folder} {state}, so no other machine could connect. Allow "
                "each machine that connects: plstream keys allow THEIR_KEY --name NAME (their key: 'plstream keys "
                "show' there)"
            )
        _check_folder(folder, "allowed-keys folder")
        return True

    def server_public_key(self) -> bytes:
        """The public key clients need for a server here (this machine's)."""
        return load_key_pair(self.keys_dir).public

    def resolve_server_key(self) -> bytes:
        """The server's public key for a client: :attr:`server_key`, else the only allowed key.

        Raises
        ------
        SecurityError
            Not a key, file or allowed name; or none given and not exactly one allowed key.
        """
        given = self.server_key.strip()
        allowed = allowed_keys(self.allowed)
        if given:
            if given in allowed and not os.path.exists(given):
                return allowed[given]
            return read_public_key(given)
        if len(allowed) == 1:
            return next(iter(allowed.values()))
        if not allowed:
            raise SecurityError(
                f"no server key: there are no allowed keys in {self.allowed}; give the server's public key with "
                "--server-key KEY (on the server: plstream keys show), or allow it: plstream keys allow KEY"
            )
        raise SecurityError(
            f"which server? {self.allowed} allows {len(allowed)} keys; give --server-key NAME, one of: "
            + ", ".join(sorted(allowed))
        )


class _AllowedKeys:
    """ZAP credentials check: a client key is admitted when it is this machine's own or in the allowed folder.

    The folder is read at each handshake, so ``plstream keys allow`` (and
    deleting a file to revoke a key) take effect without a restart.
    """

    def __init__(self, folder: Path, own: bytes) -> None:
        self.folder = folder
        self.own = own
        self.refused = 0
        self._logged: set[bytes] = set()
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self.own:
            return True
        try:
            admitted = key in zmq.auth.load_certificates(self.folder)
        except (OSError, ValueError) as exc:
            logger.error("cannot read the allowed keys in %s (%s): refusing the client", self.folder, exc)
            admitted = False
        if not admitted:
            with self._lock:
                self.refused += 1
                first = key not in self._logged
                self._logged.add(key)
            if first:  # a refused client retries every few hundred ms: say it once per key
                logger.warning(
                    "refused a connection from a client whose key is not allowed (%s); to admit it: "
                    "plstream keys allow '%s' --name NAME",
                    key.decode("ascii", "replace"),
                    key.decode("ascii", "replace"),
                )
        return admitted


class SocketSecurity:
    """A :class:`Security` policy applied to the sockets of one ZeroMQ context.

    :meth:`prepare` sets a socket's CURVE options before it binds or connects
    (the endpoint decides, see :meth:`Security.wants_curve`); the first server
    socket starts the context's ZAP handler (one per context), which admits
    this machine's own key and the allowed ones. Close it (or leave its
    ``with`` block) before the context is terminated.

    Attributes
    ----------
    context : zmq.Context
    policy : Security
    """

    def __init__(self, context: zmq.Context, policy: Security) -> None:
        self.context = context
        self.policy = policy
        self._pair: KeyPair | None = None
        self._server_key: bytes | None = None
        self._authenticator: ThreadAuthenticator | None = None
        self._allowed: _AllowedKeys | None = None
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @property
    def refused(self) -> int:
        """Handshakes refused so far because the client's key is not allowed."""
        return self._allowed.refused if self._allowed is not None else 0

    @property
    def serving(self) -> bool:
        """Whether this context's ZAP handler runs (a socket here serves CURVE)."""
        return self._authenticator is not None

    def key_pair(self) -> KeyPair:
        """This machine's key pair (checked and loaded once)."""
        if self._pair is None:
            self._pair = load_key_pair(self.policy.keys_dir)
        return self._pair

    def prepare(self, socket: zmq.Socket, endpoint: str, *, bind: bool, role: str) -> bool:
        """Make ``socket`` a CURVE server (``bind``) or client for ``endpoint`` when the policy wants it.

        Returns whether CURVE is used. Call it before ``bind``/``connect``.

        Raises
        ------
        SecurityError
            The endpoint needs keys and they are missing or unsafe (:meth:`Security.preflight`).
        """
        if not self.policy.preflight(endpoint, bind=bind, role=role):
            if reachable_by_others(endpoint) and (role, endpoint) not in self._warned:
                self._warned.add((role, endpoint))
                logger.warning(
                    "--insecure: the %s socket %s %s is NOT encrypted and %s; use this on a trusted network only",
                    role,
                    "on" if bind else "to",
                    endpoint,
                    "admits anyone who can reach it" if bind else "trusts whatever answers there",
                )
            return False
        pair = self.key_pair()
        socket.curve_secretkey = pair.secret
        socket.curve_publickey = pair.public
        if bind:
            self._start_zap()
            socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # without a ZAP handler: refuse everyone, never admit all
            socket.zap_domain = ZAP_DOMAIN.encode()
            socket.curve_server = True
        else:
            if self._server_key is None:
                self._server_key = self.policy.resolve_server_key()
            socket.curve_serverkey = self._server_key
        return True

    def _start_zap(self) -> None:
        with self._lock:
            if self._authenticator is not None:
                return
            folder = self.policy.allowed
            self._allowed = _AllowedKeys(folder, self.key_pair().public)
            authenticator = ThreadAuthenticator(self.context, log=logging.getLogger(f"{__name__}.zap"))
            authenticator.start()
            authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._allowed)
            self._authenticator = authenticator
            logger.info("admitting the CURVE keys in %s (and this machine's own)", folder)

    def close(self) -> None:
        """Stop the ZAP handler; safe to call twice."""
        with self._lock:
            if self._authenticator is not None:
                self._authenticator.stop()
                self._authenticator = None

    def __enter__(self) -> SocketSecurity:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
