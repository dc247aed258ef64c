"""CURVE key storage of one home (the keys of the remote control endpoint).

Keys live under ``<home>/keys/`` (0700): the server keypair ``server.key`` (public) and
``server.key_secret`` (0600); the public keys of clients allowed to command this fleet in
``authorized/<name>.key``; client keypairs generated on this machine in
``clients/<name>.key`` + ``.key_secret`` (or any directory given). Files use pyzmq's
certificate format, so keys made with ``zmq.auth.create_certificates`` elsewhere work too.
Files are created atomically and never overwritten; secrets are never logged or printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zmq.auth
from zmq.utils import z85

from multibot.errors import ErrorCode, MultibotError
from multibot.wire.home import Home, HomeError, private_dir as home_private_dir

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_Z85 = re.compile(rb"^[" + re.escape(z85.Z85CHARS) + rb"]{40}$")
KeyKind = Literal["server", "authorized", "client"]


class KeyStoreError(MultibotError):
    """A key is missing, malformed, already exists, or its file is not private enough."""

    CODE = ErrorCode.BAD_CONFIG


@dataclass(frozen=True)
class KeyInfo:
    """One key as ``multibot keys list`` shows it: public facts only, never a secret."""

    name: str
    kind: KeyKind
    public_key: str  # z85, 40 characters
    path: Path  # the public key file


def keys_dir(home: Home) -> Path:
    return home.root / "keys"


def authorized_dir(home: Home) -> Path:
    return keys_dir(home) / "authorized"


def clients_dir(home: Home) -> Path:
    return keys_dir(home) / "clients"


def private_dir(path: Path) -> Path:
    """``path`` created or made 0700; KeyStoreError if it is a symlink or another user's."""
    try:
        return home_private_dir(path)
    except HomeError as exc:
        raise KeyStoreError(str(exc)) from None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeyStoreError(f"bad key name {name!r}: use 1-64 letters, digits, '_', '.', '-' "
                            "(not starting with '.', '_' or '-')")
    return name


def _is_z85_key(key: bytes) -> bool:
    try:
        return bool(_Z85.match(key)) and len(z85.decode(key)) == 32
    except (ValueError, struct.error):  # e.g. a 5-character group beyond 2**32
        return False


def check_public_key(key: bytes) -> bytes:
    """``key`` as a valid z85 CURVE public key (40 characters), else KeyStoreError."""
    key = key.strip()
    if not _is_z85_key(key):
        raise KeyStoreError("not a CURVE public key (expected 40 z85 characters)")
    return key


def shell_safe_key(key: bytes) -> str:
    """A z85 public key as 64 hex digits: z85 uses characters a shell expands or splits on
    (``! * { ) [``), hex none, so it can be pasted unquoted into ``--server-key``."""
    return z85.decode(check_public_key(key)).hex()


def parse_public_key(text: str) -> bytes:
    """A public key typed by a person, hex (as printed) or z85, as z85; else KeyStoreError."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return z85.encode(bytes.fromhex(text))
    try:
        return check_public_key(text.encode())
    except KeyStoreError:
        raise KeyStoreError("not a CURVE public key (expected 64 hex digits, as "
                            "`multibot keys server` prints it, or 40 z85 characters)") from None


def load_public_key(path: Path) -> bytes:
    """The public key in a certificate file (public or secret)."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"cannot read a key from {path}: {exc}") from None
    return check_public_key(public)


def load_keypair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``*.key_secret`` file, which must not be group/world readable."""
    if path.suffix == ".key" and path.with_suffix(".key_secret").exists():
        path = path.with_suffix(".key_secret")
    public = load_public_key(path)
    _, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise KeyStoreError(f"{path} holds no secret key (pass the .key_secret file)")
    if os.stat(path).st_mode & 0o077:
        raise KeyStoreError(f"{path} is readable by other users: chmod 600 {path}")
    if not _is_z85_key(secret):
        raise KeyStoreError(f"{path} holds a malformed secret key")
    return public, secret


def _install_keypair(directory: Path, name: str) -> Path:
    """Create ``<name>.key`` (0644) and ``<name>.key_secret`` (0600) atomically; never
    overwrite (os.link fails on an existing file). Returns the secret file."""
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public_path, secret_path):
        if path.exists():
            raise KeyStoreError(f"{path} already exists; not overwriting it")
    staging = Path(tempfile.mkdtemp(prefix=".new-", dir=directory))  # 0700
    try:
        made_public, made_secret = zmq.auth.create_certificates(staging, name)
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        os.link(made_secret, secret_path)
        try:
            os.link(made_public, public_path)
        except FileExistsError:
            secret_path.unlink()
            raise
    except FileExistsError:
        raise KeyStoreError(f"{name} appeared in {directory} meanwhile; not overwriting"
                            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return secret_path


def ensure_server_keys(home: Home) -> tuple[bytes, bytes]:
    """The server keypair (public, secret) as z85, created on first use."""
    directory = private_dir(keys_dir(home))
    if not (directory / "server.key_secret").exists():
        # a concurrent creator (e.g. `multibot keys server` while the fleet starts) may win
        with contextlib.suppress(KeyStoreError):
            _install_keypair(directory, "server")
    return load_keypair(directory / "server.key_secret")


def generate_client_key(home: Home, name: str, authorize: bool = True,
                        directory: Path | None = None) -> Path:
    """A new client keypair in ``directory`` (default ``<home>/keys/clients``); with
    ``authorize`` its public key is also allowed to command this home's fleet.
    Returns the secret key file (what a remote client passes as ``--key``)."""
    check_name(name)
    if authorize and (authorized_dir(home) / f"{name}.key").exists():
        raise KeyStoreError(f"a key named {name!r} is already authorized; pick another name")
    secret_path = _install_keypair(private_dir(directory or clients_dir(home)), name)
    if authorize:
        _authorize(home, secret_path.with_suffix(".key"), name)
    return secret_path


def authorize(home: Home, public_key_file: Path, name: str) -> Path:
    """Allow the client whose public key is in ``public_key_file`` to command this fleet.
    Only the public key is copied, even from a secret file. Takes effect at once."""
    return _authorize(home, public_key_file, name)


def _authorize(home: Home, public_key_file: Path, name: str) -> Path:
    check_name(name)
    key = load_public_key(public_key_file)
    directory = private_dir(authorized_dir(home))
    for info in list_keys(home):
        if info.kind == "authorized" and info.public_key == key.decode():
            raise KeyStoreError(f"this key is already authorized as {info.name!r}")
    target = directory / f"{name}.key"
    fd, staging = tempfile.mkstemp(prefix=".new-", suffix=".key", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"#   ZeroMQ CURVE Public Certificate: client {name!r}, authorized to "
                    f"command this fleet on {time.ctime()}\nmetadata\ncurve\n"
                    f'    public-key = "{key.decode()}"\n')
        os.chmod(staging, 0o644)
        os.link(staging, target)
    except FileExistsError:
        raise KeyStoreError(f"a key named {name!r} is already authorized") from None
    finally:
        os.unlink(staging)
    return target


def revoke(home: Home, name: str) -> Path:
    """Remove an authorized key; new connections with it are refused at once."""
    path = authorized_dir(home) / f"{check_name(name)}.key"
    try:
        path.unlink()
    except FileNotFoundError:
        raise KeyStoreError(f"no authorized key named {name!r}") from None
    return path


def list_keys(home: Home) -> list[KeyInfo]:
    """Server, authorized and locally generated client keys (public facts only)."""
    found: list[KeyInfo] = []
    places: list[tuple[KeyKind, Path, str]] = [
        ("server", keys_dir(home), "server.key"),
        ("authorized", authorized_dir(home), "*.key"),
        ("client", clients_dir(home), "*.key"),
    ]
    for kind, directory, pattern in places:
        for path in sorted(directory.glob(pattern)) if directory.is_dir() else []:
            try:
                key = load_public_key(path).decode()
            except KeyStoreError as exc:
                log.warning("skipping %s", exc)
                continue
            found.append(KeyInfo(path.stem, kind, key, path))
    return found
