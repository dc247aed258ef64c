"""The fake Binance server's matching-engine faults, driven by the REAL python-binance
AsyncClient over 127.0.0.1: an order booked after the API answered 5xx -1007 (and one that
never is)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.fake_binance_support import KEY, SECRET, api_error, client_for, fake, run, until
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture


def test_late_booking_after_a_5xx_appears_only_after_the_delay(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.fail("late_booking", delay=1.0)
            sent = time.monotonic()
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                newClientOrderId="late-1"))
            assert (error.status_code, error.code) == (503, -1007)
            assert "execution status unknown" in error.message
            # invisible everywhere while the engine has not booked it
            lookup = await api_error(client.get_order(symbol="BTCUSDT",
                                                      origClientOrderId="late-1"))
            assert (lookup.status_code, lookup.code) == (400, -2013)
            assert await client.get_all_orders(symbol="BTCUSDT") == []
            assert await client.get_my_trades(symbol="BTCUSDT") == []
            assert fake.pending_bookings() == 1

            async def booked() -> bool:
                return bool(await client.get_all_orders(symbol="BTCUSDT"))
            await until(booked, timeout=5.0, what="the late booking")
            assert time.monotonic() - sent >= 1.0
            order = await client.get_order(symbol="BTCUSDT", origClientOrderId="late-1")
            assert (order["status"], order["executedQty"]) == ("FILLED", "0.00100000")
            trades = await client.get_my_trades(symbol="BTCUSDT")
            assert [t["orderId"] for t in trades] == [order["orderId"]]
            assert fake.pending_bookings() == 0
    run(scenario())


def test_late_booked_limit_rests_and_is_an_open_order(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.fail("late_booking", delay=0.3, status=502)
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                quantity="0.001", price="40000", newClientOrderId="late-limit"))
            assert (error.status_code, error.code) == (502, -1007)
            assert await client.get_open_orders(symbol="BTCUSDT") == []

            async def resting() -> list[dict[str, str]]:
                return list(await client.get_open_orders(symbol="BTCUSDT"))
            opened = await until(resting, timeout=5.0, what="the late LIMIT")
            assert [(o["clientOrderId"], o["status"]) for o in opened] == [("late-limit", "NEW")]
    run(scenario())


def test_never_booked_answers_the_same_and_books_nothing(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.fail("never_booked")
            await client.ping()  # not an order POST: still armed
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                newClientOrderId="dead-1"))
            assert (error.status_code, error.code) == (503, -1007)
            assert fake.pending_bookings() == 0
            await asyncio.sleep(0.3)  # several ticks: a late booking would have had its chance
            assert fake.orders() == [] and fake.trades() == []
            lookup = await api_error(client.get_order(symbol="BTCUSDT",
                                                      origClientOrderId="dead-1"))
            assert lookup.code == -2013
    run(scenario())


def test_late_booking_the_engine_rejects_never_appears(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.fail("late_booking", delay=0.3)
            await api_error(client.create_order(
                symbol="BTCUSDT", side="SELL", type="MARKET", quantity="5",
                newClientOrderId="late-too-big"))  # 5 BTC; the account holds 1
            await until(lambda: fake.pending_bookings() == 0, what="the booking attempt")
            assert fake.orders() == []
    run(scenario())


@pytest.fixture
def still() -> Iterator[FakeBinance]:
    """A fake whose price stands still, so fill prices can be asserted exactly."""
    with FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"], volatility=0.0,
                     balances={"USDT": "10000", "BTC": "1"}, tick_s=0.05,
                     start_prices={"BTCUSDT": 50000.0}) as server:
        yield server


def test_market_order_beyond_a_thin_book_fills_partly_and_expires(still: FakeBinance) -> None:
    fake = still

    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_liquidity("BTCUSDT", levels=["0.002", "0.003"], level_ticks=10)
            order = await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                              quantity="0.008", newClientOrderId="thin-1")
            assert (order["status"], order["executedQty"], order["origQty"]) == (
                "EXPIRED", "0.00500000", "0.00800000")
            prices = [fill["price"] for fill in order["fills"]]
            assert [fill["qty"] for fill in order["fills"]] == ["0.00200000", "0.00300000"]
            assert prices == ["50000.00000000", "50000.10000000"]  # the second level: 10 ticks up
            assert len({fill["tradeId"] for fill in order["fills"]}) == 2
            looked_up = await client.get_order(symbol="BTCUSDT", origClientOrderId="thin-1")
            assert (looked_up["status"], looked_up["executedQty"]) == ("EXPIRED", "0.00500000")
            trades = await client.get_my_trades(symbol="BTCUSDT", orderId=order["orderId"])
            assert len(trades) == 2
            btc = fake.balances()["BTC"]
            assert btc[0] == Decimal("1.005") - Decimal("0.000005")  # the fee is 0.1% in BTC

            # a FOK the book cannot fill whole fills nothing; an IOC takes what is there
            fok = await client.create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                            timeInForce="FOK", quantity="0.006",
                                            price="49000", newClientOrderId="fok")
            assert (fok["status"], fok["executedQty"]) == ("EXPIRED", "0.00000000")
            ioc = await client.create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                            timeInForce="IOC", quantity="0.006",
                                            price="49000", newClientOrderId="ioc")
            assert (ioc["status"], ioc["executedQty"]) == ("EXPIRED", "0.00500000")
            gtc = await client.create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                            timeInForce="GTC", quantity="0.006",
                                            price="49999.95", newClientOrderId="gtc")
            assert (gtc["status"], gtc["executedQty"]) == ("PARTIALLY_FILLED", "0.00200000")
            assert [o["clientOrderId"] for o in await client.get_open_orders(
                symbol="BTCUSDT")] == ["gtc"]  # the second level (49999.90) is beyond the limit
    run(scenario())


def test_a_resting_limit_fills_in_several_trades_over_time(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            fake.set_liquidity("BTCUSDT", fill_parts=3)
            order = await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                              timeInForce="GTC", quantity="0.010",
                                              price="49000", newClientOrderId="parts")
            assert order["status"] == "NEW"
            fake.set_price("BTCUSDT", 48000)

            async def filled() -> bool:
                got = await client.get_order(symbol="BTCUSDT", orderId=order["orderId"])
                return bool(got["status"] == "FILLED")
            await until(filled, what="three fills")
            trades = await client.get_my_trades(symbol="BTCUSDT", orderId=order["orderId"])
            assert [t["qty"] for t in trades] == ["0.00333000", "0.00333000", "0.00334000"]
            assert len({t["id"] for t in trades}) == 3 and all(t["isMaker"] for t in trades)
            assert len({t["time"] for t in trades}) >= 2  # on different ticks
    run(scenario())


def test_maintenance_closes_the_market_but_not_cancels(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            resting = await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                                timeInForce="GTC", quantity="0.001",
                                                price="49000", newClientOrderId="before")
            fake.set_maintenance("BTCUSDT")
            info = await client.get_exchange_info()
            assert {s["symbol"]: s["status"] for s in info["symbols"]} == {
                "BTCUSDT": "BREAK", "ETHUSDT": "TRADING"}
            error = await api_error(client.create_order(
                symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.001",
                newClientOrderId="exit"))
            assert (error.status_code, error.code, error.message) == (
                400, -2010, "Market is closed.")
            await client.create_order(symbol="ETHUSDT", side="BUY", type="MARKET",
                                      quantity="0.01")  # the other market trades on
            fake.set_price("BTCUSDT", 48000)
            await asyncio.sleep(0.3)  # crossing ticks: a market in maintenance matches nothing
            assert (await client.get_order(symbol="BTCUSDT", orderId=resting["orderId"])
                    )["status"] == "NEW"
            canceled = await client.cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])
            assert canceled["status"] == "CANCELED"

            fake.set_maintenance(None)  # the whole exchange
            assert (await api_error(client.create_order(
                symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01"))).message == (
                "Market is closed.")
            fake.set_maintenance(None, on=False)
            order = await client.create_order(symbol="BTCUSDT", side="SELL", type="MARKET",
                                              quantity="0.001", newClientOrderId="exit")
            assert order["status"] == "FILLED"
    run(scenario())


def test_each_new_order_rejection_has_its_own_message(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            too_much = await api_error(client.create_order(
                symbol="BTCUSDT", side="SELL", type="MARKET", quantity="2"))
            assert (too_much.code, too_much.message) == (
                -2010, "Account has insufficient balance for requested action.")
            await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                      timeInForce="GTC", quantity="0.001", price="40000",
                                      newClientOrderId="twice")
            duplicate = await api_error(client.create_order(
                symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                quantity="0.001", price="40000", newClientOrderId="twice"))
            assert (duplicate.code, duplicate.message) == (-2010, "Duplicate order sent.")
    run(scenario())
