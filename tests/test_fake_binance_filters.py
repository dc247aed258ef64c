"""The fake's full exchangeInfo filter set (real BTCUSDT's), used in its order checks with
Binance's messages, read by the REAL python-binance AsyncClient; and our own rules loader
keeps working on it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from multibot.market.rules import load_rules
from orchestrator.exchange.venue import trading_rules
from tests.fake_binance_support import api_error, client_for, fake, run
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture
REAL_ORDER = ["PRICE_FILTER", "LOT_SIZE", "ICEBERG_PARTS", "MARKET_LOT_SIZE", "TRAILING_DELTA",
              "PERCENT_PRICE_BY_SIDE", "NOTIONAL", "MAX_NUM_ORDERS", "MAX_NUM_ALGO_ORDERS"]


def test_exchange_info_has_the_full_filter_set_and_our_loader_reads_it(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            info = await client.get_exchange_info()
            for symbol in info["symbols"]:
                assert [f["filterType"] for f in symbol["filters"]] == REAL_ORDER
            btc = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
            assert btc["PERCENT_PRICE_BY_SIDE"]["bidMultiplierUp"] == "5"
            assert btc["MAX_NUM_ORDERS"]["maxNumOrders"] == 200
            rules = trading_rules(info)
            assert set(rules) == {"BTCUSDT", "ETHUSDT"}
            assert (rules["BTCUSDT"].tick_size, rules["BTCUSDT"].min_notional) == ("0.01", "5")
            assert load_rules(info)["BTCUSDT"].step_size == "0.00001"
    run(scenario())


def test_percent_price_by_side(fake: FakeBinance) -> None:
    fake.set_price("BTCUSDT", 50000)

    async def scenario() -> None:
        async with client_for(fake) as client:
            for side, price in (("BUY", "260000"), ("SELL", "9000")):
                error = await api_error(client.create_order(
                    symbol="BTCUSDT", side=side, type="LIMIT", timeInForce="GTC",
                    quantity="0.001", price=price))
                assert (error.status_code, error.code, error.message) == (
                    400, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE")
            inside = await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                               timeInForce="GTC", quantity="0.001",
                                               price="20000")  # 0.4x: inside [0.2x, 5x]
            assert inside["status"] == "NEW"
    run(scenario())


def test_max_num_orders_per_symbol_and_per_account(fake: FakeBinance) -> None:
    fake.set_filter("BTCUSDT", {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 2})

    async def scenario() -> None:
        async with client_for(fake) as client:
            def rest(coid: str, symbol: str = "BTCUSDT", price: str = "40000") -> Any:
                qty = "0.001" if symbol == "BTCUSDT" else "0.01"
                return client.create_order(symbol=symbol, side="BUY", type="LIMIT",
                                           timeInForce="GTC", quantity=qty, price=price,
                                           newClientOrderId=coid)
            await rest("a")
            await rest("b")
            error = await api_error(rest("c"))
            assert (error.status_code, error.code, error.message) == (
                400, -2010, "Filter failure: MAX_NUM_ORDERS")
            symbol_info = await client.get_symbol_info("BTCUSDT")
            limits = {f["filterType"]: f for f in symbol_info["filters"]}
            assert limits["MAX_NUM_ORDERS"]["maxNumOrders"] == 2
            await client.cancel_order(symbol="BTCUSDT", origClientOrderId="a")
            await rest("c")  # room again

            fake.set_exchange_max_num_orders(3)
            await rest("e1", "ETHUSDT", "2000")
            error = await api_error(rest("e2", "ETHUSDT", "2000"))
            assert (error.code, error.message) == (
                -2010, "Filter failure: EXCHANGE_MAX_NUM_ORDERS")
            info = await client.get_exchange_info()
            assert info["exchangeFilters"] == [
                {"filterType": "EXCHANGE_MAX_NUM_ORDERS", "maxNumOrders": 3}]
            assert fake.balances()["USDT"][1] == Decimal("40") * 2 + Decimal("20")
    run(scenario())
