"""The fake's user data stream over the WebSocket API, read by the REAL python-binance
AsyncClient's ``user_socket()`` (userDataStream.subscribe.signature): every order state
change and fill, late-booked orders included, and the faults that make a client fall back to
polling (a dropped connection, delayed events)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException

from tests.fake_binance_support import client_for, fake, run, until
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture
EXECUTION_FIELDS = {"e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X",
                    "r", "i", "l", "z", "L", "n", "N", "T", "t", "I", "w", "m", "M", "O", "Z",
                    "Y", "Q", "W", "V"}


async def events_until(socket: Any, done: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Events (python-binance error notices included) until ``done(events)`` holds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; events so far: {seen}")
        seen.append(dict(await asyncio.wait_for(socket.recv(), left)))
    return seen


def user_socket(client: AsyncClient) -> Any:
    """python-binance's user socket; the WebSocket API's read loop notices a close only
    between receives (10 s by default), so a short timeout keeps the teardown fast."""
    client.ws_api.TIMEOUT = 2.0
    return BinanceSocketManager(client).user_socket()


def reports(events: list[dict[str, Any]], client_id: str) -> list[tuple[str, str]]:
    return [(e["x"], e["X"]) for e in events
            if e.get("e") == "executionReport" and client_id in (e["c"], e["C"])]


def has(kind: str, status: str, client_id: str) -> Any:
    return lambda events: (kind, status) in reports(events, client_id)


def test_every_order_change_and_fill_is_pushed(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            async with user_socket(client) as user:
                assert fake.user_stream_subscriptions() == 1
                order = await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                  quantity="0.001", newClientOrderId="u-1")
                events = await events_until(user, lambda ev: any(
                    e["e"] == "outboundAccountPosition" for e in ev))
                assert reports(events, "u-1") == [("NEW", "NEW"), ("TRADE", "FILLED")]
                trade = events[1]
                assert set(trade) == EXECUTION_FIELDS
                fill = order["fills"][0]
                assert (trade["i"], trade["t"], trade["l"], trade["L"], trade["n"], trade["N"],
                        trade["z"], trade["m"]) == (
                    order["orderId"], fill["tradeId"], "0.00100000", fill["price"],
                    fill["commission"], "BTC", "0.00100000", False)
                position = {b["a"]: (b["f"], b["l"]) for b in events[2]["B"]}
                balances = fake.balances()
                assert position["BTC"] == (f"{balances['BTC'][0]:.8f}", "0.00000000")

                await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                          timeInForce="GTC", quantity="0.001", price="40000",
                                          newClientOrderId="u-2")
                await client.cancel_order(symbol="BTCUSDT", origClientOrderId="u-2",
                                          newClientOrderId="u-2-cancel")
                events = await events_until(user, has("CANCELED", "CANCELED", "u-2"))
                assert reports(events, "u-2") == [("NEW", "NEW"), ("CANCELED", "CANCELED")]
                cancel = events[-1]
                assert (cancel["c"], cancel["C"]) == ("u-2-cancel", "u-2")

                fake.deposit("USDT", "250")
                events = await events_until(user, lambda ev: any(
                    e["e"] == "balanceUpdate" for e in ev))
                assert {k: v for k, v in events[-1].items() if k in "ad"} == {
                    "a": "USDT", "d": "250.00000000"}
            await until(lambda: fake.user_stream_subscriptions() == 0,
                        what="userDataStream.unsubscribe")  # python-binance unsubscribes on exit
    run(scenario())


def test_resting_fills_expiries_and_late_bookings_are_pushed(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, user_socket(client) as user:
            await client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                      timeInForce="GTC", quantity="0.001", price="49000",
                                      newClientOrderId="rest-1")
            fake.set_price("BTCUSDT", 48000)
            events = await events_until(user, has("TRADE", "FILLED", "rest-1"))
            trade = next(e for e in events if e.get("x") == "TRADE")
            assert (trade["m"], trade["L"]) == (True, "49000.00000000")

            fake.fail("late_booking", delay=0.5)
            try:
                await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="0.001", newClientOrderId="late-u")
            except BinanceAPIException as error:
                assert error.code == -1007
            events = await events_until(user, has("TRADE", "FILLED", "late-u"))
            assert reports(events, "late-u") == [("NEW", "NEW"), ("TRADE", "FILLED")]
    run(scenario())


def test_a_bad_signature_is_refused(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake, secret="not-the-secret") as client:
            try:
                async with user_socket(client):
                    raise AssertionError("subscribed with a bad signature")
            except BinanceAPIException as error:
                assert (error.status_code, error.code) == (400, -1022)
            assert fake.user_stream_subscriptions() == 0
    run(scenario())


def test_a_dropped_connection_ends_the_subscription(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client:
            client.ws_api.MAX_RECONNECTS = 0  # stays down: the events are gone either way
            user = user_socket(client)
            await user.__aenter__()
            try:
                fake.drop_user_streams()
                events = await events_until(user, lambda ev: any(
                    e.get("e") == "error" for e in ev))
                assert events[-1]["e"] == "error"  # python-binance's notice to the reader
                assert fake.user_stream_subscriptions() == 0
                await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="0.001", newClientOrderId="unseen")
                # only polling sees the fill now
                assert (await client.get_order(symbol="BTCUSDT", origClientOrderId="unseen")
                        )["status"] == "FILLED"
            finally:
                user._subscription_id = None  # nothing left to unsubscribe
                await user.__aexit__(None, None, None)
    run(scenario())


def test_a_terminated_subscription_says_so_then_goes_quiet(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, user_socket(client) as user:
            fake.terminate_user_streams()
            events = await events_until(user, lambda ev: bool(ev))
            assert events[0]["e"] == "eventStreamTerminated"
            await until(lambda: fake.user_stream_subscriptions() == 0)
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                      quantity="0.001", newClientOrderId="quiet")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(user.recv(), 0.5)  # nothing more on this subscription
            assert client.ws_api.ws is not None  # the connection itself is still up
    run(scenario())


def test_delayed_events_arrive_late(fake: FakeBinance) -> None:
    async def scenario() -> None:
        async with client_for(fake) as client, user_socket(client) as user:
            fake.delay_user_events(1.0)
            sent = time.monotonic()
            await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                      quantity="0.001", newClientOrderId="slow-1")
            await events_until(user, has("TRADE", "FILLED", "slow-1"))
            assert time.monotonic() - sent >= 1.0
    run(scenario())
