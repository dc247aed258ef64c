"""Signed-endpoint checks as Binance makes them: the API key header, a signature of the exact
payload as sent, the timestamp inside recvWindow.

An API key signs one of three ways, as on Binance: HMAC-SHA256 with a shared secret (hex), or
Ed25519 or RSA (RSASSA-PKCS1-v1_5 with SHA-256) with a private key whose public key was
registered for the API key (base64, percent-encoded in the request). The payload is the query
string and body exactly as sent, percent-encoding included: a signature computed over the
decoded text is refused (Binance refuses them since 2026-01). Keys live only in ``Signer`` and
never go into a message, a log line or an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Protocol
from urllib.parse import parse_qsl, unquote_plus

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC, RSA
from Crypto.Signature import eddsa, pkcs1_15

from tests.fakes.binance.errors import ApiError, bad_request, mandatory

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


def request_params(query: str, body: str) -> dict[str, str]:
    """A request's parameters; one sent in both the query string and the body takes the
    query string's value, as Binance documents."""
    params = dict(parse_qsl(body, keep_blank_values=True))
    params.update(parse_qsl(query, keep_blank_values=True))
    return params


def strip_signature(payload: str) -> tuple[str, str | None]:
    """(payload without its ``signature=`` pair, the signature as sent or None)."""
    kept, signature = [], None
    for part in payload.split("&") if payload else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


class _Verifier(Protocol):
    def verify(self, payload: bytes, signature: str) -> bool: ...


class _Hmac:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def verify(self, payload: bytes, signature: str) -> bool:
        digest = hmac.new(self._secret, payload, hashlib.sha256).hexdigest()
        return hmac.compare_digest(digest, signature.lower())


def _base64(signature: str) -> bytes | None:
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Ed25519:
    def __init__(self, key: ECC.EccKey) -> None:
        self._key = key

    def verify(self, payload: bytes, signature: str) -> bool:
        raw = _base64(signature)
        if raw is None:
            return False
        try:
            eddsa.new(self._key, "rfc8032").verify(payload, raw)
        except ValueError:
            return False
        return True


class _Rsa:
    def __init__(self, key: RSA.RsaKey) -> None:
        self._key = key

    def verify(self, payload: bytes, signature: str) -> bool:
        raw = _base64(signature)
        if raw is None:
            return False
        try:
            pkcs1_15.new(self._key).verify(SHA256.new(payload), raw)
        except (ValueError, TypeError):
            return False
        return True


def _public_key_verifier(public_key_pem: str) -> _Verifier:
    """An Ed25519 or RSA public key (PEM) as Binance takes them; ValueError otherwise."""
    try:
        ecc = ECC.import_key(public_key_pem)
    except ValueError:
        rsa = RSA.import_key(public_key_pem)  # ValueError if not a key either
        if rsa.has_private():
            raise ValueError("register the public key, not the private one") from None
        return _Rsa(rsa)
    if ecc.curve != "Ed25519" or ecc.has_private():
        raise ValueError("an Ed25519 public key is needed")
    return _Ed25519(ecc)


class Signer:
    """The API keys the fake knows, each with how its requests are signed."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._keys: dict[str, _Verifier] = {api_key: _Hmac(api_secret)}

    def __repr__(self) -> str:
        return "Signer(<redacted>)"

    def add_public_key(self, api_key: str, public_key_pem: str) -> None:
        """Register an API key whose requests are signed by the private half of an Ed25519 or
        RSA ``public_key_pem`` (as a user does on Binance's API management page)."""
        self._keys[api_key] = _public_key_verifier(public_key_pem)

    def verify(self, api_key: str | None, payload: str, signature: str) -> bool:
        """Whether ``signature`` (its value: hex, or base64 with no percent-encoding) signs
        exactly ``payload`` for ``api_key``. Also for the WebSocket API's signed requests
        (their payload is built by the caller from the request's params)."""
        verifier = self._keys.get(api_key or "")
        return verifier is not None and verifier.verify(payload.encode(), signature)

    def check(self, api_key: str | None, query: str, body: str, params: dict[str, str],
              server_ms: int) -> None:
        """Raise the ApiError Binance would answer a signed request with, if any."""
        if api_key is None or api_key not in self._keys:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, signature = strip_signature(query)
        if signature is None:
            rest, signature = strip_signature(body)
            payload = payload + rest
        elif body:
            payload += body  # Binance signs query string + body when both are sent
        if not params.get("timestamp"):
            raise mandatory("timestamp")
        if not signature:
            raise mandatory("signature")
        if not self.verify(api_key, payload, unquote_plus(signature)):
            raise bad_request(-1022, "Signature for this request is not valid.")
        try:
            timestamp = int(params["timestamp"])
            window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW)
        except ValueError:
            raise mandatory("timestamp") from None
        if window > MAX_RECV_WINDOW or window <= 0:
            raise bad_request(-1131, "recvWindow must be less than 60000")
        if timestamp >= server_ms + 1000 or server_ms - timestamp > window:
            raise bad_request(-1021, "Timestamp for this request is outside of the recvWindow.")
