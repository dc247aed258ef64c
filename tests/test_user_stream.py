"""Fills from Binance's user data stream (WebSocket API, userDataStream.subscribe.signature)
through the exchange broker's ledger, with the REAL python-binance client against the local
Binance-protocol server: journaled once by trade id whether the stream or polling sees them
first, renewed after a drop while polling covers, and late bookings seen as they happen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from binance import BinanceSocketManager

from multibot.wire.protocol import ErrorCode, ProtocolError
from orchestrator.exchange.client import ExchangeClient
from orchestrator.exchange.credentials import load_credentials
from orchestrator.exchange.endpoints import REAL_WS_API, WS_API_ENV, resolve_endpoints
from orchestrator.exchange.userstream import follow_user_stream, on_execution
from orchestrator.exchange.venue import trading_rules
from orchestrator.exchange.watcher import watch
from tests.exchange_support import (
    ENV,
    KEY,
    ORDER_PATH,
    SECRET,
    Desk,
    assert_journal_matches_exchange,
    fake_server as fake,
    limit,
    market,
    run,
)
from tests.fake_binance_support import client_for, until
from tests.fakes.binance import FakeBinance

__all__ = ["fake"]  # the fixture


@contextlib.asynccontextmanager
async def streaming(fake: FakeBinance, path: Path, poll_s: float | None = None,
                    reconcile_every_s: float = 3600) -> AsyncIterator[Desk]:
    """A desk following the user data stream; polling only with ``poll_s``."""
    desk = await Desk.open(fake, path)
    desk.client.sdk.ws_api.TIMEOUT = 2.0  # python-binance notices a close between receives
    tasks = [asyncio.create_task(follow_user_stream(desk.broker, resubscribe_s=(0.2,)))]
    if poll_s is not None:
        tasks.append(asyncio.create_task(watch(desk.broker, period_s=poll_s,
                                               reconcile_every_s=reconcile_every_s)))
    try:
        await desk.broker.reconcile("BTCUSDT")
        await until(lambda: desk.broker.stream_healthy, what="the user data stream")
        yield desk
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        await desk.close()


def resting_at(fake: FakeBinance) -> tuple[str, float]:
    price = fake.price("BTCUSDT")
    return str((price * Decimal("0.98")).quantize(Decimal("0.01"))), float(price) * 0.97


def test_a_resting_fill_arrives_by_the_stream_and_is_journaled_once(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db") as desk:  # no polling at all
            rest_at, crossing = resting_at(fake)
            resting = await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            assert resting.order.status == "NEW"
            lookups = fake.count("GET", ORDER_PATH)
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.pushed and desk.pushed[-1].order.status == "FILLED",
                        what="the fill pushed by the stream")
            assert fake.count("GET", ORDER_PATH) == lookups  # nobody polled
            [fill] = desk.journal.order_fills("mb-BTCUSDT-1")
            [trade] = fake.trades("BTCUSDT")
            assert fill.exchange_trade_id == trade["id"]
            # polling sees the same trade: journaled once
            async with desk.broker.ledger.lock("BTCUSDT"):
                again = await desk.broker.ledger.look_up(resting.order)
            assert again is not None and not again.fills
            assert len(desk.journal.fills("BTCUSDT")) == 1
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())


def test_a_dropped_stream_is_renewed_and_polling_covers_meanwhile(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db", poll_s=0.05) as desk:
            rest_at, crossing = resting_at(fake)
            fake.delay_user_events(30.0)  # the stream says nothing in time: polling must
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            fake.drop_user_streams()
            await until(lambda: not desk.broker.stream_healthy, what="the stream seen down")
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the fill found by polling while the stream is down")
            fake.delay_user_events(0)
            await until(lambda: desk.broker.stream_healthy
                        and fake.user_stream_subscriptions() == 1, timeout=10,
                        what="the stream subscribed again")
            # fills come by the stream again (the watcher polls slowly now)
            rest_at, crossing = resting_at(fake)
            await desk.broker.place("BTCUSDT", limit(2, "BUY", "0.002", rest_at))
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.order_status("mb-BTCUSDT-2") == "FILLED", timeout=10,
                        what="the second fill")
            assert len(desk.journal.fills("BTCUSDT")) == 2
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())


@pytest.mark.parametrize("ending", ["terminated", "lifetime"])
def test_a_subscription_that_ends_is_renewed(
        fake: FakeBinance, tmp_path: Path, ending: str) -> None:
    """eventStreamTerminated (the connection stays up, events stop) and the connection's
    lifetime (Binance's 24 h) both end the subscription: a new one brings fills again."""
    async def main() -> None:
        if ending == "lifetime":
            fake.set_connection_lifetime(1.0)
        async with streaming(fake, tmp_path / "j.db") as desk:  # no polling at all
            fake.set_connection_lifetime(None)  # for the connections to come
            subscribed = desk.broker.stream_subscriptions
            if ending == "terminated":
                fake.terminate_user_streams()
            await until(lambda: desk.broker.stream_subscriptions > subscribed
                        and fake.user_stream_subscriptions() == 1, timeout=10,
                        what="a new subscription")
            await until(lambda: desk.broker.stream_healthy, what="the stream healthy again")
            rest_at, crossing = resting_at(fake)
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the fill, by the renewed stream")

    run(main())


def test_polling_slows_down_while_the_stream_is_healthy(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db", poll_s=0.05) as desk:
            far = str((fake.price("BTCUSDT") * Decimal("0.5")).quantize(Decimal("0.01")))
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", far))
            before = fake.count("GET", ORDER_PATH)
            await asyncio.sleep(1.5)  # a measurement over a fixed time, not a wait
            # without the stream a round every 0.05 s (9 look-ups here); 10x slower with it
            assert fake.count("GET", ORDER_PATH) - before <= 4

    run(main())


def test_a_late_booking_is_seen_on_the_stream_and_unblocks_the_symbol(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.exchange.broker._LOOKUPS_S", (0.05, 0.05))

    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db") as desk:  # no polling at all
            fake.fail("late_booking", delay=1.0)
            with pytest.raises(ProtocolError) as info:
                await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            assert info.value.code == ErrorCode.TIMEOUT
            assert desk.broker.halted("BTCUSDT")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the late booking, by the stream")
            assert desk.broker.halted("BTCUSDT") == ""
            assert desk.pushed[-1].order.status == "FILLED" and desk.pushed[-1].fills
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())


def test_an_order_closed_as_never_booked_is_adopted_from_the_stream(
        fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.exchange.broker._LOOKUPS_S", (0.05, 0.05))
    monkeypatch.setattr("orchestrator.exchange.ledger.RECV_WINDOW_NS", 200_000_000)
    monkeypatch.setattr("orchestrator.exchange.ledger.SETTLE_MARGIN_NS", 100_000_000)
    monkeypatch.setattr(ExchangeClient, "order_send_within_s", 0.1)

    async def main() -> None:
        # polling settles the unknown order; periodic reconciliation is off: only the stream
        # can tell that the engine booked it after all
        async with streaming(fake, tmp_path / "j.db", poll_s=0.05) as desk:
            fake.fail("late_booking", delay=2.5)
            with pytest.raises(ProtocolError):
                await desk.broker.place("BTCUSDT", market(1, "BUY", "0.002"))
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "EXPIRED", timeout=10,
                        what="closed as never booked")
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="adopted from the stream")
            order = desk.journal.get_order("mb-BTCUSDT-1")
            assert order is not None
            assert order.reason.startswith("adopted: the user data stream")
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")

    run(main())


def test_events_twice_and_out_of_order_are_journaled_once_and_never_move_back(
        tmp_path: Path) -> None:
    with partial_fills() as fake:
        run(_replayed(fake, tmp_path))


async def _recorded(fake: FakeBinance, desk: Desk) -> list[dict[str, Any]]:
    """The user data stream's events of a resting BUY that fills, as another client of the
    same account receives them (the desk's own stream is not running)."""
    async with client_for(fake, KEY, SECRET) as recorder:
        recorder.ws_api.TIMEOUT = 2.0
        async with BinanceSocketManager(recorder).user_socket() as user:
            rest_at, crossing = resting_at(fake)
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            fake.set_price("BTCUSDT", crossing)
            events: list[dict[str, Any]] = []
            while not any(e.get("X") == "FILLED" for e in events):
                events.append(dict(await asyncio.wait_for(user.recv(), 5)))
    return events


def partial_fills() -> FakeBinance:
    return FakeBinance(api_key=KEY, api_secret=SECRET, symbols=["BTCUSDT"], partial_fills=True,
                       balances={"USDT": "10000"}, tick_s=0.2,
                       start_prices={"BTCUSDT": 50000.0})  # resting orders fill in two


async def _replayed(fake: FakeBinance, tmp_path: Path) -> None:
    desk = await Desk.open(fake, tmp_path / "j.db")  # no stream task: we hand it the events
    try:
        events = await _recorded(fake, desk)
        new = next(e for e in events if e.get("x") == "NEW")
        half, rest = (e for e in events if e.get("x") == "TRADE")
        for event in (half, new, half, new):  # a piece, then old news, twice
            await on_execution(desk.broker, event)
        order = desk.journal.get_order("mb-BTCUSDT-1")
        assert order is not None and order.status == "PARTIALLY_FILLED"
        assert order.executed_qty == "0.001"
        for event in (rest, half, rest):
            await on_execution(desk.broker, event)
        assert desk.order_status("mb-BTCUSDT-1") == "FILLED"
        assert [u.order.status for u in desk.pushed] == ["PARTIALLY_FILLED", "FILLED"]
        assert len(desk.journal.fills("BTCUSDT")) == 2
        assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
    finally:
        await desk.close()


def test_a_missed_event_is_filled_in_by_polling(tmp_path: Path) -> None:
    async def main(fake: FakeBinance) -> None:
        desk = await Desk.open(fake, tmp_path / "j.db")
        try:
            events = await _recorded(fake, desk)
            _, rest = (e for e in events if e.get("x") == "TRADE")
            await on_execution(desk.broker, rest)  # the first piece's event was lost
            order = desk.journal.get_order("mb-BTCUSDT-1")
            assert order is not None and order.status == "PARTIALLY_FILLED"  # not FILLED short
            async with desk.broker.ledger.lock("BTCUSDT"):
                update = await desk.broker.ledger.look_up(order)
            assert update is not None and update.order.status == "FILLED"
            assert len(update.fills) == 1  # the missing piece, found before the known one
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
        finally:
            await desk.close()

    with partial_fills() as fake:
        run(main(fake))


def test_a_stream_that_cannot_be_had_does_not_stop_trading(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        nowhere = {WS_API_ENV: "ws://127.0.0.1:9/ws-api/v3"}  # nothing listens there
        endpoints = resolve_endpoints("testnet", fake.rest_url, fake.stream_url, nowhere)
        client = await ExchangeClient.connect(endpoints, load_credentials("testnet", environ=ENV))
        try:
            rules = trading_rules(await client.exchange_info())
        except BaseException:
            await client.close()
            raise
        desk = Desk(fake, tmp_path / "j.db", client, rules)
        tasks: list[asyncio.Task[None]] = []
        try:
            for symbol in rules:
                desk.price_bar(symbol)
            tasks += [asyncio.create_task(follow_user_stream(desk.broker, resubscribe_s=(0.1,))),
                      asyncio.create_task(watch(desk.broker, period_s=0.05))]
            rest_at, crossing = resting_at(fake)
            await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            fake.set_price("BTCUSDT", crossing)
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the fill, found by polling")
            assert not desk.broker.stream_healthy and desk.broker.stream_subscriptions == 0
            assert client.user_stream.startswith("down, polling covers: ")  # status shows it
            assert_journal_matches_exchange(desk, "BTCUSDT", "BTC")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await desk.close()

    run(main())


def test_the_websocket_api_is_binances_or_beside_the_configured_streams() -> None:
    assert resolve_endpoints("live", environ={}).ws_api_url == REAL_WS_API["live"]
    assert resolve_endpoints("testnet", environ={}).ws_api_url == REAL_WS_API["testnet"]
    mine = resolve_endpoints("live", "http://127.0.0.1:9/api", "ws://127.0.0.1:9", environ={})
    assert mine.ws_api_url == "ws://127.0.0.1:9/ws-api/v3"
    env = {WS_API_ENV: "ws://127.0.0.1:8/ws-api/v3"}
    assert resolve_endpoints("live", environ=env).ws_api_url == "ws://127.0.0.1:8/ws-api/v3"
