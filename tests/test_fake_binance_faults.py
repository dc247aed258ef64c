"""The fake Binance server's faults and rate limits, driven by the REAL python-binance
AsyncClient over 127.0.0.1: every injected fault kind, the request-weight limit (429, then a
418 ban) and the order rate limit."""

from __future__ import annotations

import asyncio
import time

import pytest
from binance.exceptions import BinanceAPIException

from tests.fake_binance_support import KEY, SECRET, api_error, client_for, fake, run, until
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture

def test_every_fault_kind(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.fail("429", retry_after=3)
            error = await api_error(client.ping())
            assert (error.status_code, error.code) == (429, -1003)
            assert error.response.headers["Retry-After"] == "3"
            assert "X-MBX-USED-WEIGHT-1M" in error.response.headers
            fake.fail("418", retry_after=5)
            error = await api_error(client.ping())
            assert (error.status_code, error.code, error.response.headers["Retry-After"]) == (
                418, -1003, "5")
            fake.fail("5xx", status=502)
            error = await api_error(client.ping())
            assert (error.status_code, error.code) == (502, 0)  # non-JSON body
            fake.fail("-1021")
            assert (await api_error(client.get_account())).code == -1021
            fake.fail("-2010")
            assert (await api_error(client.get_account())).code == -2010
            fake.fail("-1013", msg="Filter failure: NOTIONAL")
            error = await api_error(client.get_account())
            assert (error.code, error.message) == (-1013, "Filter failure: NOTIONAL")
            # method/path filters: the armed fault waits for its request, then disarms
            fake.fail("5xx", times=2, method="GET", path="/api/v3/account")
            await client.ping()
            assert (await api_error(client.get_account())).status_code == 503
            assert (await api_error(client.get_account())).status_code == 503
            await client.get_account()
            fake.fail("slow", delay=0.3, path="time")
            started = time.monotonic()
            await client.get_server_time()
            assert time.monotonic() - started >= 0.3

            fake.fail("5xx_after_accept")
            await client.ping()  # not an order POST: the fault is still armed
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                newClientOrderId="unknown-1"))
            assert (error.status_code, error.code) == (503, -1007)
            assert [o["clientOrderId"] for o in fake.orders()] == ["unknown-1"]
            looked_up = await client.get_order(symbol="BTCUSDT", origClientOrderId="unknown-1")
            assert looked_up["status"] == "FILLED"
            fake.fail("5xx_after_accept", status=504, body="html")
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                newClientOrderId="unknown-2"))
            assert (error.status_code, error.code) == (504, 0)
            assert len(fake.orders()) == 2 and len(fake.trades()) == 2
            with pytest.raises(ValueError):
                fake.fail("nonsense")
    run(scenario())


def test_weight_limit_429_then_418_ban() -> None:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"], weight_limit=30,
                     weight_window_s=1.0, ban_s=0.5) as fake:
        async def scenario() -> None:
            async with client_for(fake) as client:
                def fresh_window() -> bool:
                    return time.time() % 1.0 < 0.5  # half a window left for the burst
                await until(fresh_window)
                await client.get_exchange_info()  # weight 2 + 20
                error = await api_error(client.get_exchange_info())  # 42 > 30
                assert (error.status_code, error.code) == (429, -1003)
                assert error.response.headers["Retry-After"] == "1"
                assert int(error.response.headers["X-MBX-USED-WEIGHT-1M"]) > 30
                ban = await api_error(client.ping())  # did not wait: banned
                assert (ban.status_code, ban.code) == (418, -1003)
                assert int(ban.response.headers["Retry-After"]) >= 1
                await asyncio.sleep(1.0)
                assert await client.ping() == {}
        run(scenario())


def test_order_rate_limit() -> None:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"],
                     orders_10s_limit=2) as fake:
        async def scenario() -> None:
            async with client_for(fake) as client:
                for i in range(6):
                    try:
                        await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                  quantity="0.0001", newClientOrderId=f"o{i}")
                    except BinanceAPIException as error:
                        assert (error.status_code, error.code) == (429, -1015)
                        assert error.message == ("Too many new orders; current limit is 2 "
                                                 "orders per TEN_SECONDS.")
                        return
                    assert int(client.response.headers["X-MBX-ORDER-COUNT-10S"]) <= 2
                raise AssertionError("no -1015")
        run(scenario())


# -- streams ---------------------------------------------------------------------------------
