"""Binance API keys: from the environment or a private key file, never from argv.

Testnet and live keys live under different names and a key file says which network it is for,
so a testnet key can never be used live or the other way round. The secret is held in a
``Secret`` whose repr and str are masked: printing a Credentials object shows no key.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from multibot.errors import ErrorCode, MultibotError

ENV_NAMES = {
    "live": ("MULTIBOT_BINANCE_API_KEY", "MULTIBOT_BINANCE_API_SECRET"),
    "testnet": ("MULTIBOT_BINANCE_TESTNET_API_KEY", "MULTIBOT_BINANCE_TESTNET_API_SECRET"),
}
KEY_FILE_ENV = {"live": "MULTIBOT_BINANCE_KEY_FILE",
                "testnet": "MULTIBOT_BINANCE_TESTNET_KEY_FILE"}


class CredentialsError(MultibotError, ValueError):
    """Keys missing, unreadable, too readable, or for the other network. Never holds a key."""

    CODE = ErrorCode.BAD_CONFIG


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Credentials:
    network: str
    api_key: Secret
    api_secret: Secret
    source: str  # where they came from (an env name or a path): safe to show

    def redact(self, text: str) -> str:
        """``text`` with both key and secret masked (for error messages from below)."""
        for value in (self.api_key.reveal(), self.api_secret.reveal()):
            if value:
                text = text.replace(value, "***")
        return text


def _check_private(path: Path) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialsError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise CredentialsError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    if info.st_uid != os.getuid():
        raise CredentialsError(f"key file {path} belongs to another user (uid {info.st_uid})")


def _from_file(network: str, path: Path) -> Credentials:
    _check_private(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read key file {path}: {exc}") from None
    except tomllib.TOMLDecodeError:
        # the parser's message may quote the file's content, i.e. the secret
        raise CredentialsError(f"key file {path} is not valid TOML") from None
    unknown = set(data) - {"network", "api_key", "api_secret"}
    if unknown:
        raise CredentialsError(f"key file {path}: unknown keys {', '.join(sorted(unknown))}")
    declared = data.get("network")
    if declared not in ENV_NAMES:
        raise CredentialsError(
            f'key file {path} must say which network it is for: network = "live" or "testnet"')
    if declared != network:
        raise CredentialsError(
            f"key file {path} holds {declared} keys; --mode {network} needs {network} keys "
            "(testnet and live keys are never mixed)")
    key, secret = data.get("api_key"), data.get("api_secret")
    if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
        raise CredentialsError(f"key file {path} needs api_key and api_secret strings")
    return Credentials(network, Secret(key), Secret(secret), str(path))


def load_credentials(network: str, key_file: str = "",
                     environ: Mapping[str, str] | None = None) -> Credentials:
    """Keys for ``network``: ``key_file`` (or its env var), else the network's env pair."""
    env = os.environ if environ is None else environ
    path = key_file or env.get(KEY_FILE_ENV[network], "")
    if path:
        return _from_file(network, Path(path).expanduser())
    key_name, secret_name = ENV_NAMES[network]
    key, secret = env.get(key_name, ""), env.get(secret_name, "")
    if key and secret:
        return Credentials(network, Secret(key), Secret(secret), f"${key_name}")
    other = "testnet" if network == "live" else "live"
    hint = ""
    if all(env.get(n) for n in ENV_NAMES[other]):
        hint = f" ({other} keys are set, but they are never used for {network})"
    raise CredentialsError(
        f"--mode {network} needs Binance API keys: set {key_name} and {secret_name}, or "
        f"--key-file FILE (TOML with network, api_key, api_secret; mode 0600){hint}"
    )
