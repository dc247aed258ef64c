"""Signed-endpoint checks as Binance makes them: API key header, HMAC-SHA256 signature of
the exact payload, timestamp inside recvWindow. The secret lives only in ``Signer`` and is
never put in a message, a log line or an exception."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote_plus

from tests.fakes.binance.errors import ApiError, bad_request, mandatory

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


def strip_signature(payload: str) -> tuple[str, str | None]:
    """(payload without its ``signature=`` pair, the signature or None)."""
    kept, signature = [], None
    for part in payload.split("&") if payload else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


class Signer:
    def __init__(self, api_key: str, api_secret: str) -> None:
        self._api_key = api_key
        self._secret = api_secret.encode()

    def __repr__(self) -> str:
        return "Signer(<redacted>)"

    def _valid(self, payload: str, signature: str) -> bool:
        # python-binance signs the raw values but form-encodes the body it sends, so the
        # decoded payload is accepted too (they differ only for values with reserved chars)
        for candidate in dict.fromkeys((payload, unquote_plus(payload))):
            digest = hmac.new(self._secret, candidate.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(digest, signature.lower()):
                return True
        return False

    def check(self, api_key: str | None, query: str, body: str, params: dict[str, str],
              server_ms: int) -> None:
        """Raise the ApiError Binance would answer a signed request with, if any."""
        if api_key != self._api_key:
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
        if not self._valid(payload, signature):
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
