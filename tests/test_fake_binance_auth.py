"""The fake server checks signatures as Binance does: HMAC, Ed25519 and RSA keys with the REAL
python-binance client, and hand-made requests for what Binance refuses (a signature over the
decoded payload) and decides (the query string wins over the body)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from binance import AsyncClient
from Crypto.PublicKey import ECC, RSA

from tests.fake_binance_support import KEY, SECRET, api_error, fake, run
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture

ED_KEY, RSA_KEY = "ed25519-api-key", "rsa-api-key"


@pytest.fixture(scope="module")
def ed25519() -> ECC.EccKey:
    return ECC.generate(curve="Ed25519")


@pytest.fixture(scope="module")
def rsa() -> RSA.RsaKey:
    return RSA.generate(2048)


@pytest.fixture
def keyed(fake: FakeBinance, ed25519: ECC.EccKey, rsa: RSA.RsaKey) -> Iterator[FakeBinance]:
    fake.add_api_key(ED_KEY, ed25519.public_key().export_key(format="PEM"))
    fake.add_api_key(RSA_KEY, rsa.public_key().export_key().decode())
    yield fake


def _client(fake: FakeBinance, **credentials: Any) -> AsyncClient:
    class Local(AsyncClient):  # type: ignore[misc]  # python-binance is untyped (Any)
        API_URL = fake.rest_url

    return Local(**credentials)


async def _trade(client: AsyncClient, coid: str) -> None:
    """A signed GET, POST and DELETE: what the broker does with a key."""
    assert "balances" in await client.get_account()
    order = await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                      timeInForce="GTC", quantity="0.001", price="40000",
                                      newClientOrderId=coid)
    assert order["status"] == "NEW"
    got = await client.get_order(symbol="BTCUSDT", origClientOrderId=coid)
    assert got["orderId"] == order["orderId"]
    canceled = await client.cancel_order(symbol="BTCUSDT", origClientOrderId=coid)
    assert canceled["status"] == "CANCELED"


@pytest.mark.parametrize("kind", ["hmac", "ed25519", "rsa", "rsa-with-passphrase"])
def test_the_real_client_signs_with_each_kind_of_key(keyed: FakeBinance, ed25519: ECC.EccKey,
                                                      rsa: RSA.RsaKey, kind: str) -> None:
    credentials: dict[str, Any] = {
        "hmac": {"api_key": KEY, "api_secret": SECRET},
        "ed25519": {"api_key": ED_KEY, "private_key": ed25519.export_key(format="PEM")},
        "rsa": {"api_key": RSA_KEY, "private_key": rsa.export_key().decode()},
        "rsa-with-passphrase": {
            "api_key": RSA_KEY, "private_key_pass": "pass-phrase-9",
            "private_key": rsa.export_key(passphrase="pass-phrase-9", pkcs=8,
                                          protection="scryptAndAES128-CBC").decode()},
    }[kind]

    async def scenario() -> None:
        client = _client(keyed, **credentials)
        try:
            await _trade(client, f"auth-{kind}")
        finally:
            await client.close_connection()

    run(scenario())


def test_a_signature_by_another_key_is_refused(keyed: FakeBinance) -> None:
    other_ed, other_rsa = ECC.generate(curve="Ed25519"), RSA.generate(2048)
    cases = [
        {"api_key": ED_KEY, "private_key": other_ed.export_key(format="PEM")},
        {"api_key": RSA_KEY, "private_key": other_rsa.export_key().decode()},
        {"api_key": ED_KEY, "api_secret": SECRET},  # an Ed25519 key does not take HMAC
        {"api_key": KEY, "api_secret": "not-the-secret"},
    ]

    async def scenario() -> None:
        for credentials in cases:
            client = _client(keyed, **credentials)
            try:
                error = await api_error(client.get_account())
                assert (error.status_code, error.code) == (400, -1022)
                assert error.message == "Signature for this request is not valid."
            finally:
                await client.close_connection()

    run(scenario())


def test_only_public_keys_of_ed25519_or_rsa_are_registered(fake: FakeBinance,
                                                           rsa: RSA.RsaKey) -> None:
    for bad in (rsa.export_key().decode(), ECC.generate(curve="P-256").public_key().export_key(
            format="PEM"), "not a key"):
        with pytest.raises(ValueError):
            fake.add_api_key("bad-key", bad)


# --- hand-made requests ---------------------------------------------------------------------


def _hmac(payload: str) -> str:
    return hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _send(fake: FakeBinance, method: str, path: str, query: str = "",
          body: str = "") -> tuple[int, Any]:
    url = f"{fake.rest_url}/v3/{path}" + (f"?{query}" if query else "")
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers={"X-MBX-APIKEY": KEY, "Content-Type":
                                              "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _now() -> str:
    return f"recvWindow=5000&timestamp={int(time.time() * 1000)}"


def test_a_signature_over_the_decoded_payload_is_refused(fake: FakeBinance) -> None:
    # GET: "BTC%55SDT" is sent; the signature must cover it as sent, not "BTCUSDT"
    sent = f"symbol=BTC%55SDT&{_now()}"
    decoded = sent.replace("%55", "U")
    assert _send(fake, "GET", "openOrders", f"{decoded}&signature={_hmac(decoded)}")[0] == 200
    status, reply = _send(fake, "GET", "openOrders", f"{sent}&signature={_hmac(decoded)}")
    assert (status, reply["code"]) == (400, -1022)
    assert reply["msg"] == "Signature for this request is not valid."
    assert _send(fake, "GET", "openOrders", f"{sent}&signature={_hmac(sent)}") == (200, [])
    # POST: the body as sent, percent-encoding included
    sent = f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0%2E001&newClientOrderId=dec-1&{_now()}"
    decoded = sent.replace("%2E", ".")
    status, reply = _send(fake, "POST", "order", body=f"{sent}&signature={_hmac(decoded)}")
    assert (status, reply["code"]) == (400, -1022)
    assert not [o for o in fake.orders() if o["clientOrderId"] == "dec-1"]
    status, reply = _send(fake, "POST", "order", body=f"{sent}&signature={_hmac(sent)}")
    assert status == 200 and Decimal(reply["executedQty"]) == Decimal("0.001")


def test_the_query_string_wins_over_the_body(fake: FakeBinance) -> None:
    query = f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.001&newClientOrderId=q-1&{_now()}"
    body = "quantity=0.002&newClientOrderId=b-1"
    status, reply = _send(fake, "POST", "order", query,
                          f"{body}&signature={_hmac(query + body)}")  # Binance: query + body
    assert status == 200, reply
    assert reply["clientOrderId"] == "q-1" and Decimal(reply["origQty"]) == Decimal("0.001")
    # a signed value: the timestamp in the query string is the one checked
    stale = f"symbol=BTCUSDT&recvWindow=5000&timestamp={int(time.time() * 1000) - 60_000}"
    body = f"timestamp={int(time.time() * 1000)}"
    status, reply = _send(fake, "GET", "openOrders", stale,
                          f"{body}&signature={_hmac(stale + body)}")
    assert (status, reply["code"]) == (400, -1021)
