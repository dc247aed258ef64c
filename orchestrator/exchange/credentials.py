"""Binance API keys: from the environment or a private key file, never from argv.

An API key signs with an HMAC secret, or with an Ed25519 or RSA private key whose public key
was registered on Binance (which deprecates HMAC). A private key is given as PEM text or as
the path of a PEM file (mode 0600), optionally encrypted with a passphrase.

Testnet and live keys live under different names and a key file says which network it is for,
so a testnet key can never be used live or the other way round. Every secret (HMAC secret,
private key, passphrase) is held in a ``Secret`` whose repr and str are masked: printing a
Credentials object shows no key, and ``redact`` masks them all in any text.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from multibot.errors import ErrorCode, MultibotError

ENV_NAMES = {
    "live": ("MULTIBOT_BINANCE_API_KEY", "MULTIBOT_BINANCE_API_SECRET"),
    "testnet": ("MULTIBOT_BINANCE_TESTNET_API_KEY", "MULTIBOT_BINANCE_TESTNET_API_SECRET"),
}
# a private key (PEM text or a path) and its passphrase, instead of the API secret
PRIVATE_KEY_ENV = {
    "live": ("MULTIBOT_BINANCE_PRIVATE_KEY", "MULTIBOT_BINANCE_PRIVATE_KEY_PASS"),
    "testnet": ("MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY",
                "MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY_PASS"),
}
KEY_FILE_ENV = {"live": "MULTIBOT_BINANCE_KEY_FILE",
                "testnet": "MULTIBOT_BINANCE_TESTNET_KEY_FILE"}
_KEY_FILE_FIELDS = {"network", "api_key", "api_secret", "private_key", "private_key_pass"}
_MASK_MIN_CHARS = 8  # a PEM line shorter than this is not worth masking (and too common)


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
    api_secret: Secret | None  # HMAC-SHA256; None when a private key signs
    source: str  # where they came from (an env name or a path): safe to show
    # Ed25519 or RSA, as unencrypted PEM (decrypted when loaded); None when HMAC signs
    private_key: Secret | None = None
    signing: str = "hmac"  # how requests are signed: hmac, ed25519 or rsa (safe to show)
    # everything else redact() must mask: the passphrase, the key's text as given
    hidden: tuple[Secret, ...] = field(default=(), repr=False)

    def sdk_arguments(self) -> dict[str, str | None]:
        """python-binance's Client/AsyncClient keyword arguments for these keys."""
        return {
            "api_key": self.api_key.reveal(),
            "api_secret": self.api_secret.reveal() if self.api_secret else None,
            # decrypted already: python-binance 1.0.37 passes the passphrase to RSA keys only
            "private_key": self.private_key.reveal() if self.private_key else None,
            "private_key_pass": None,
        }

    def redact(self, text: str) -> str:
        """``text`` with every secret masked (for error messages from below)."""
        secrets = [self.api_key, self.api_secret, self.private_key, *self.hidden]
        values: list[str] = []
        for secret in secrets:
            if secret is not None and secret.reveal():
                value = secret.reveal()
                values.append(value)
                # a PEM's lines one by one too: a message may quote part of it
                values += [line.strip() for line in value.splitlines()
                           if len(line.strip()) >= _MASK_MIN_CHARS
                           and not line.startswith("-----")]
        for value in sorted(set(values), key=len, reverse=True):
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


def _read_private(path: Path) -> str:
    _check_private(path)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:  # the text of a decode error is no secret
        raise CredentialsError(f"cannot read key file {path}: {exc}") from None


def _load_private_key(given: str, passphrase: str, where: str,
                      relative_to: Path | None = None) -> tuple[Secret, str, list[Secret]]:
    """(the key as unencrypted PEM python-binance reads, its kind, what else to mask) from
    ``given``:
    PEM text, or the path of a private PEM file (relative to ``relative_to`` if not absolute).
    CredentialsError, never quoting the key, if it is not an Ed25519 or RSA private key."""
    if given.lstrip().startswith("-----BEGIN"):
        pem = given
    else:
        path = Path(given).expanduser()
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        pem = _read_private(path)
        where = f"{where} ({path})"
    from Crypto.PublicKey import ECC, RSA  # python-binance's own crypto library

    key: ECC.EccKey | RSA.RsaKey | None = None
    for importer in (ECC.import_key, RSA.import_key):
        try:
            key = importer(pem, passphrase=passphrase or None)
            break
        except (ValueError, TypeError, IndexError):  # not this kind, or a wrong passphrase
            continue
    if key is None:
        raise CredentialsError(
            f"{where}: not an Ed25519 or RSA private key in PEM, or a wrong passphrase")
    if not key.has_private():
        raise CredentialsError(f"{where} holds a public key: give the private key")
    if isinstance(key, RSA.RsaKey):
        unlocked, kind = key.export_key().decode(), "rsa"
    elif key.curve != "Ed25519":
        raise CredentialsError(f"{where}: Binance takes Ed25519 keys, not {key.curve}")
    else:
        # PKCS#8, under the 120 characters by which python-binance 1.0.37 tells it from RSA
        unlocked, kind = key.export_key(format="PEM"), "ed25519"
    return Secret(unlocked), kind, [Secret(pem), Secret(passphrase)]


def _signed_by(network: str, key: str, secret: str, private_key: str, passphrase: str,
               source: str, where: str, relative_to: Path | None = None) -> Credentials:
    if secret and private_key:
        raise CredentialsError(f"{where}: give an API secret or a private key, not both")
    if not private_key:
        return Credentials(network, Secret(key), Secret(secret), source)
    unlocked, kind, hidden = _load_private_key(private_key, passphrase, where, relative_to)
    return Credentials(network, Secret(key), None, source, unlocked, kind, tuple(hidden))


def _from_file(network: str, path: Path) -> Credentials:
    text = _read_private(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        # the parser's message may quote the file's content, i.e. the secret
        raise CredentialsError(f"key file {path} is not valid TOML") from None
    unknown = set(data) - _KEY_FILE_FIELDS
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
    key = data.get("api_key")
    secret, private_key = data.get("api_secret", ""), data.get("private_key", "")
    passphrase = data.get("private_key_pass", "")
    if not all(isinstance(v, str) for v in (key, secret, private_key, passphrase)) or not key \
            or not (secret or private_key):
        raise CredentialsError(f"key file {path} needs api_key and api_secret strings (or "
                               "private_key: an Ed25519/RSA PEM or its path, and "
                               "private_key_pass if it is encrypted)")
    return _signed_by(network, key, secret, private_key, passphrase, str(path),
                      f"key file {path}", relative_to=path.parent)


def load_credentials(network: str, key_file: str = "",
                     environ: Mapping[str, str] | None = None) -> Credentials:
    """Keys for ``network``: ``key_file`` (or its env var), else the network's env names."""
    env = os.environ if environ is None else environ
    path = key_file or env.get(KEY_FILE_ENV[network], "")
    if path:
        return _from_file(network, Path(path).expanduser())
    key_name, secret_name = ENV_NAMES[network]
    private_name, pass_name = PRIVATE_KEY_ENV[network]
    key, secret = env.get(key_name, ""), env.get(secret_name, "")
    private_key = env.get(private_name, "")
    if key and (secret or private_key):
        return _signed_by(network, key, secret, private_key, env.get(pass_name, ""),
                          f"${key_name}", f"${secret_name if secret else private_name}")
    other = "testnet" if network == "live" else "live"
    hint = ""
    if env.get(ENV_NAMES[other][0]) and (env.get(ENV_NAMES[other][1])
                                         or env.get(PRIVATE_KEY_ENV[other][0])):
        hint = f" ({other} keys are set, but they are never used for {network})"
    raise CredentialsError(
        f"--mode {network} needs Binance API keys: set {key_name} and {secret_name} (or "
        f"{private_name}, an Ed25519/RSA private key, with {pass_name} if encrypted), or "
        f"--key-file FILE (TOML with network, api_key, and api_secret or private_key; "
        f"mode 0600){hint}"
    )
