"""The user data stream subscribed with an Ed25519 or RSA key (Binance deprecates HMAC):
python-binance signs ``userDataStream.subscribe.signature`` with the private key our
credentials load, and the local Binance-protocol server checks it against the public key
registered for the API key; fills then arrive by the stream alone."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC, RSA

from orchestrator.exchange.client import ExchangeClient
from orchestrator.exchange.credentials import load_credentials
from orchestrator.exchange.endpoints import resolve_endpoints
from orchestrator.exchange.userstream import follow_user_stream
from orchestrator.exchange.venue import trading_rules
from tests.exchange_support import ORDER_PATH, Desk, fake_server as fake, limit, run
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance
from tests.test_user_stream import resting_at

__all__ = ["fake"]  # the fixture


def key_pair(kind: str) -> tuple[str, str]:
    """(private PEM, public PEM) of a new key."""
    if kind == "ed25519":
        ed = ECC.generate(curve="Ed25519")
        return ed.export_key(format="PEM"), ed.public_key().export_key(format="PEM")
    rsa = RSA.generate(2048)
    return rsa.export_key().decode(), rsa.public_key().export_key().decode()


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_fills_arrive_by_a_stream_subscribed_with_a_private_key(
        fake: FakeBinance, tmp_path: Path, kind: str) -> None:
    private_pem, public_pem = key_pair(kind)
    api_key = f"{kind}-stream-key"
    fake.add_api_key(api_key, public_pem)
    env = {"MULTIBOT_BINANCE_TESTNET_API_KEY": api_key,
           "MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY": private_pem}

    async def main() -> None:
        credentials = load_credentials("testnet", environ=env)
        assert credentials.signing == kind
        endpoints = resolve_endpoints("testnet", fake.rest_url, fake.stream_url, environ={})
        client = await ExchangeClient.connect(endpoints, credentials)
        try:
            rules = trading_rules(await client.exchange_info())
        except BaseException:
            await client.close()
            raise
        desk = Desk(fake, tmp_path / "j.db", client, rules)
        desk.client.sdk.ws_api.TIMEOUT = 2.0
        stream = asyncio.create_task(follow_user_stream(desk.broker, resubscribe_s=(0.2,)))
        try:
            desk.price_bar("BTCUSDT")
            await until(lambda: desk.broker.stream_healthy, timeout=10,
                        what=f"the user data stream subscribed with an {kind} key")
            assert fake.user_stream_subscriptions() == 1
            rest_at, crossing = resting_at(fake)
            resting = await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            assert resting.order.status == "NEW"
            lookups = fake.count("GET", ORDER_PATH)
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the fill pushed by the stream")
            assert fake.count("GET", ORDER_PATH) == lookups  # nobody polled
            assert api_key not in desk.client.user_stream and private_pem not in str(
                desk.journal.events())
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(stream, 5)
            await desk.close()

    run(main())
