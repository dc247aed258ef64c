"""The fake Binance server's REST side, driven by the REAL python-binance AsyncClient over
127.0.0.1: shapes, matching, fees, errors (faults and limits: test_fake_binance_faults)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal

import pytest

from tests.fake_binance_support import (
    KEY,
    SECRET,
    ZERO,
    api_error,
    client_for,
    fake,
    run,
    until,
)
from tests.fakes.binance import FakeBinance, FakeBinanceError
from tests.fakes.binance.market import SymbolMarket
from tests.fakes.binance.symbols import load_rules

__all__ = ["fake"]  # the fixture


def test_public_endpoints_have_binance_shapes(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            assert await client.ping() == {}
            server_time = (await client.get_server_time())["serverTime"]
            assert abs(server_time - time.time() * 1000) < 2000
            info = await client.get_exchange_info()
            assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
            assert {(r["rateLimitType"], r["interval"], r["limit"]) for r in info["rateLimits"]
                    } >= {("REQUEST_WEIGHT", "MINUTE", 6000), ("ORDERS", "SECOND", 100),
                          ("ORDERS", "DAY", 200000)}
            one = await client._get("exchangeInfo", data={"symbol": "ETHUSDT"})
            assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
            two = await client._get("exchangeInfo", data={"symbols": '["ETHUSDT","BTCUSDT"]'})
            assert [s["symbol"] for s in two["symbols"]] == ["ETHUSDT", "BTCUSDT"]
            error = await api_error(client._get("exchangeInfo", data={"symbol": "NOPEUSDT"}))
            assert (error.status_code, error.code, error.message) == (400, -1121,
                                                                      "Invalid symbol.")
            assert (await api_error(client._get("nothing"))).status_code == 404

            bars = await client.get_klines(symbol="BTCUSDT", interval="1m")
            assert len(bars) == 500
            assert all(len(b) == 12 for b in bars)
            first = bars[0]
            assert isinstance(first[0], int) and isinstance(first[6], int)
            assert isinstance(first[8], int) and first[11] == "0"
            assert all(isinstance(first[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10))
            assert first[6] == first[0] + 60_000 - 1
            assert [b[0] for b in bars] == list(range(bars[0][0], bars[-1][0] + 1, 60_000))
            assert time.time() * 1000 - bars[-1][0] < 61_000  # the forming bar is last
            assert len(await client.get_klines(symbol="BTCUSDT", interval="1h",
                                               limit=5000)) == 1000
            earliest = await client.get_klines(symbol="BTCUSDT", interval="1d", startTime=0,
                                               limit=1)
            window = await client.get_klines(symbol="BTCUSDT", interval="1d",
                                             startTime=earliest[0][0],
                                             endTime=earliest[0][0] + 2 * 86_400_000)
            assert [b[0] for b in window] == [earliest[0][0] + i * 86_400_000 for i in range(3)]
            latest = await client.get_klines(symbol="BTCUSDT", interval="1d",
                                             endTime=earliest[0][0] + 86_400_000, limit=5)
            assert [b[0] for b in latest] == [b[0] for b in window[:2]]
            error = await api_error(client.get_klines(symbol="BTCUSDT", interval="7m"))
            assert error.code == -1120
    run(scenario())


def test_history_ends_at_the_start_price() -> None:
    rules = load_rules(["BTCUSDT"])["BTCUSDT"]
    market = SymbolMarket(rules, Decimal("50000.00"), seed=3, volatility=0.001, tick_s=0.1,
                          now_ms=1_700_000_030_000)
    for name in ("1s", "1m", "1h", "1d"):
        rows = market.klines(name, None, None, 1000)
        assert len(rows) == 1000
        assert rows[-2][4] == "50000.00000000"  # the last historic close
        assert rows[-1][1] == "50000.00000000"  # the forming bar opens there
        assert all(Decimal(r[3]) <= min(Decimal(r[1]), Decimal(r[4])) for r in rows)
        assert all(Decimal(r[2]) >= max(Decimal(r[1]), Decimal(r[4])) for r in rows)


def test_price_path_is_deterministic_per_seed() -> None:
    rules = load_rules(["ETHUSDT"])["ETHUSDT"]

    def path(seed: int) -> list[Decimal]:
        market = SymbolMarket(rules, Decimal("2500"), seed, 0.001, 0.1, 1_700_000_000_000)
        prices = []
        for i in range(200):
            market.advance(1_700_000_000_000 + 100 * i, set())
            prices.append(market.price)
        return prices

    assert path(7) == path(7)
    assert path(7) != path(8)
    assert all(p > 0 and p % Decimal("0.01") == 0 for p in path(7))


def test_weight_headers_on_every_response(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            def used() -> int:
                return int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
            await client.ping()
            before = used()
            await client.get_exchange_info()
            assert used() == before + 20
            await client.get_open_orders()
            assert used() == before + 100
            await client.get_open_orders(symbol="BTCUSDT")
            assert used() == before + 106
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                      quantity="0.001", newClientOrderId="w1")
            headers = client.response.headers
            assert used() == before + 107
            assert headers["X-MBX-ORDER-COUNT-10S"] == "1"
            assert headers["X-MBX-ORDER-COUNT-1D"] == "1"
            await api_error(client.get_order(symbol="BTCUSDT", orderId=99))
            assert used() == before + 111
    run(scenario())


# -- orders ----------------------------------------------------------------------------------
def test_market_buy_full_response_fees_and_balances(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            buy = await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                            quantity="0.01000", newClientOrderId="buy-1")
            price = Decimal(buy["fills"][0]["price"])
            assert price % Decimal("0.01") == 0
            assert buy["status"] == "FILLED" and buy["clientOrderId"] == "buy-1"
            assert buy["executedQty"] == "0.01000000" and buy["origQty"] == "0.01000000"
            assert buy["cummulativeQuoteQty"] == f"{price * Decimal('0.01'):.8f}"
            assert len(buy["fills"]) == 1
            assert buy["fills"][0]["commission"] == "0.00001000"
            assert buy["fills"][0]["commissionAsset"] == "BTC"
            for key in ("orderId", "transactTime", "workingTime", "selfTradePreventionMode",
                        "orderListId", "origQuoteOrderQty", "timeInForce"):
                assert key in buy
            balances = fake.balances()
            assert balances["USDT"] == (Decimal("10000") - price * Decimal("0.01"), ZERO)
            assert balances["BTC"] == (Decimal("1.00999"), ZERO)

            sell = await client.create_order(symbol="BTCUSDT", side="SELL", type="MARKET",
                                             quantity="0.005", newClientOrderId="sell-1",
                                             newOrderRespType="RESULT")
            assert "fills" not in sell and sell["status"] == "FILLED"
            trades = await client.get_my_trades(symbol="BTCUSDT")
            assert [t["orderId"] for t in trades] == [buy["orderId"], sell["orderId"]]
            assert trades[1]["id"] > trades[0]["id"]
            sell_price = Decimal(trades[1]["price"])
            fee = (sell_price * Decimal("0.005") * Decimal("0.001")).quantize(
                Decimal("0.00000001"), rounding="ROUND_DOWN")
            assert Decimal(trades[1]["commission"]) == fee
            assert trades[1]["commissionAsset"] == "USDT" and not trades[1]["isBuyer"]
            assert set(trades[0]) == {"symbol", "id", "orderId", "orderListId", "price", "qty",
                                      "quoteQty", "commission", "commissionAsset", "time",
                                      "isBuyer", "isMaker", "isBestMatch"}
            expected_usdt = (Decimal("10000") - price * Decimal("0.01")
                             + sell_price * Decimal("0.005") - fee)
            account = await client.get_account()
            usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
            assert usdt == {"asset": "USDT", "free": f"{expected_usdt:.8f}",
                            "locked": "0.00000000"}
            assert account["accountType"] == "SPOT" and account["canTrade"]
            assert account["permissions"] == ["SPOT"]

            by_quote = await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                 quoteOrderQty="100", newClientOrderId="q-1",
                                                 newOrderRespType="ACK")
            assert set(by_quote) == {"symbol", "orderId", "orderListId", "clientOrderId",
                                     "transactTime"}
            order = await client.get_order(symbol="BTCUSDT", origClientOrderId="q-1")
            assert Decimal(order["cummulativeQuoteQty"]) <= 100
            assert order["origQuoteOrderQty"] == "100.00000000"
            assert [o["orderId"] for o in fake.orders("BTCUSDT")] == [1, 2, 3]
    run(scenario())


def test_limit_rests_then_fills_when_the_price_crosses(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_price("BTCUSDT", 50000.0)
            order = await client.order_limit_buy(symbol="BTCUSDT", quantity="0.01",
                                                 price="49000.00", newClientOrderId="lim-1")
            assert order["status"] == "NEW" and order["fills"] == []
            assert fake.balances()["USDT"] == (Decimal("9510.0000"), Decimal("490.0000"))
            open_orders = await client.get_open_orders(symbol="BTCUSDT")
            assert [o["clientOrderId"] for o in open_orders] == ["lim-1"]
            await asyncio.sleep(0.2)  # ticks around 50000 must not fill it
            assert fake.open_orders()[0]["status"] == "NEW"
            fake.set_price("BTCUSDT", 48000.0)

            async def filled() -> bool:
                got = await client.get_order(symbol="BTCUSDT", orderId=order["orderId"])
                return bool(got["status"] == "FILLED")
            await until(filled, what="the resting order to fill")
            trade = fake.trades("BTCUSDT")[0]
            assert trade["price"] == "49000.00000000" and trade["isMaker"]
            assert fake.balances()["USDT"] == (Decimal("9510.0000"), ZERO)
            assert fake.balances()["BTC"] == (Decimal("1.00999"), ZERO)
            assert await client.get_open_orders() == []
            ioc = await client.order_limit_buy(symbol="BTCUSDT", quantity="0.01",
                                               price="40000.00", timeInForce="IOC")
            assert ioc["status"] == "EXPIRED" and ioc["timeInForce"] == "IOC"
            assert fake.balances()["USDT"] == (Decimal("9510.0000"), ZERO)
            # marketable on arrival: fills at once at the current price, not the limit
            sell = await client.order_limit_sell(symbol="BTCUSDT", quantity="0.001",
                                                 price="10000.00", newClientOrderId="lim-2")
            assert sell["status"] == "FILLED"
            assert Decimal(sell["fills"][0]["price"]) > 10000
    run(scenario())


def test_partial_fills_in_two_halves() -> None:
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["ETHUSDT"], tick_s=0.05,
                     partial_fills=True, start_prices={"ETHUSDT": 2500.0}) as fake:
        async def scenario() -> None:
            async with client_for(fake) as client:
                await client.order_limit_buy(symbol="ETHUSDT", quantity="0.0100",
                                             price="2400.00", newClientOrderId="half")
                fake.set_price("ETHUSDT", 2390.0)
                await until(lambda: fake.orders()[0]["status"] == "FILLED")
                assert [t["qty"] for t in fake.trades()] == ["0.00500000", "0.00500000"]
                assert fake.balances()["USDT"] == (Decimal("9976.0000"), ZERO)
        run(scenario())


def test_cancel_and_lookups(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_price("BTCUSDT", 50000.0)
            order = await client.order_limit_sell(symbol="BTCUSDT", quantity="0.5",
                                                  price="60000.00", newClientOrderId="c-1")
            assert fake.balances()["BTC"] == (Decimal("0.5"), Decimal("0.5"))
            canceled = await client.cancel_order(symbol="BTCUSDT", origClientOrderId="c-1")
            assert canceled["status"] == "CANCELED"
            assert canceled["origClientOrderId"] == "c-1"
            assert canceled["orderId"] == order["orderId"]
            assert fake.balances()["BTC"] == (Decimal("1.0"), ZERO)
            again = await api_error(client.cancel_order(symbol="BTCUSDT",
                                                        orderId=order["orderId"]))
            assert (again.code, again.message) == (-2011, "Unknown order sent.")
            missing = await api_error(client.get_order(symbol="BTCUSDT", orderId=12345))
            assert (missing.status_code, missing.code) == (400, -2013)
            assert missing.message == "Order does not exist."
            # a client id is unique among OPEN orders only; a lookup finds the newest
            await client.order_limit_sell(symbol="BTCUSDT", quantity="0.1", price="60000.00",
                                          newClientOrderId="c-1")
            got = await client.get_order(symbol="BTCUSDT", origClientOrderId="c-1")
            assert got["status"] == "NEW" and got["orderId"] == order["orderId"] + 1
            dup = await api_error(client.order_limit_sell(
                symbol="BTCUSDT", quantity="0.1", price="60000.00", newClientOrderId="c-1"))
            assert (dup.code, dup.message) == (-2010, "Duplicate order sent.")
            everything = await client.get_all_orders(symbol="BTCUSDT")
            assert [o["status"] for o in everything] == ["CANCELED", "NEW"]
            later = await client.get_all_orders(symbol="BTCUSDT", orderId=order["orderId"] + 1)
            assert len(later) == 1
    run(scenario())


def test_rejections(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_price("BTCUSDT", 50000.0)
            cases = [
                (dict(type="MARKET", side="BUY", quantity="1"), -2010,
                 "Account has insufficient balance for requested action."),
                (dict(type="MARKET", side="SELL", quantity="2"), -2010,
                 "Account has insufficient balance for requested action."),
                (dict(type="MARKET", side="BUY", quantity="0.000015"), -1013,
                 "Filter failure: LOT_SIZE"),
                (dict(type="MARKET", side="BUY", quantity="0.00001"), -1013,
                 "Filter failure: NOTIONAL"),
                (dict(type="LIMIT", side="BUY", quantity="0.01", price="49000.001",
                      timeInForce="GTC"), -1013, "Filter failure: PRICE_FILTER"),
                (dict(type="LIMIT", side="BUY", quantity="0.01", timeInForce="GTC"), -1102,
                 "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
                (dict(type="MARKET", side="BUY", quantity="1e-3"), -1100, None),
                (dict(type="MARKET", side="BUY"), -1102, None),
            ]
            for i, (params, code, msg) in enumerate(cases):
                error = await api_error(client.create_order(symbol="BTCUSDT",
                                                            newClientOrderId=f"r{i}", **params))
                assert (error.status_code, error.code) == (400, code), params
                if msg:
                    assert error.message == msg
            assert fake.orders() == [] and fake.balances()["USDT"] == (Decimal("10000"), ZERO)
            unknown = await api_error(client.create_order(symbol="NOPE", side="BUY",
                                                          type="MARKET", quantity="1"))
            assert unknown.code == -1121

            fake.set_clock_offset(20_000)  # server ahead: the client's timestamp is too old
            late = await api_error(client.get_account())
            assert (late.status_code, late.code) == (400, -1021)
            fake.set_clock_offset(-5_000)  # server behind: the timestamp is in its future
            assert (await api_error(client.get_account())).code == -1021
            fake.set_clock_offset(0)
            await client.get_account()

        async with client_for(fake, secret="wrong-secret") as client:
            bad = await api_error(client.get_account())
            assert (bad.status_code, bad.code) == (400, -1022)
            assert bad.message == "Signature for this request is not valid."
        async with client_for(fake, key="wrong-key") as client:
            bad = await api_error(client.get_open_orders())
            assert (bad.status_code, bad.code) == (401, -2015)
    run(scenario())


def test_secret_never_leaks(fake: FakeBinance, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> list[str]:
        texts = []
        async with client_for(fake, secret="wrong-secret") as client:
            texts.append(str(await api_error(client.get_account())))
        async with client_for(fake) as client:
            fake.fail("5xx_after_accept")
            error = await api_error(client.create_order(symbol="BTCUSDT", side="BUY",
                                                        type="MARKET", quantity="0.001"))
            texts.append(await error.response.text())
            texts.append(json.dumps(await client.get_account()))
        return texts

    texts = run(scenario())
    texts += [repr(fake), caplog.text, repr(fake.requests())]
    assert all(SECRET not in text for text in texts)


def test_external_order_is_visible_to_the_client(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_price("BTCUSDT", 50000.0)
            placed = fake.place_external_order("BTCUSDT", "BUY", "LIMIT", "0.01", "45000.00")
            assert placed["status"] == "NEW" and placed["clientOrderId"] == "web_external_1"
            found = await client.get_open_orders()
            assert [o["clientOrderId"] for o in found] == ["web_external_1"]
            with pytest.raises(FakeBinanceError) as info:
                fake.place_external_order("BTCUSDT", "BUY", "MARKET", "100")
            assert info.value.code == -2010
    run(scenario())


def test_request_log(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                      quantity="0.001", newClientOrderId="log-1")
            await api_error(client.get_order(symbol="BTCUSDT", orderId=77))
    run(scenario())
    posts = [r for r in fake.requests() if r.method == "POST"]
    assert len(posts) == 1 and posts[0].path == "/api/v3/order"
    assert posts[0].params["newClientOrderId"] == "log-1"
    assert "signature" not in posts[0].params and "timestamp" in posts[0].params
    assert (posts[0].status, posts[0].code) == (200, None)
    assert fake.count("GET", "/api/v3/order", status=400) == 1
    assert fake.count("get", "order") == 1 and fake.count("GET", "/api/v3/ping") == 1


# -- faults ----------------------------------------------------------------------------------
