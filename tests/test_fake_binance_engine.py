"""The fake Binance server's matching-engine faults, driven by the REAL python-binance
AsyncClient over 127.0.0.1: an order booked after the API answered 5xx -1007 (and one that
never is)."""

from __future__ import annotations

import asyncio
import time

from tests.fake_binance_support import api_error, client_for, fake, run, until
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
