"""Malformed and hostile user data stream events, pushed by the local Binance-protocol server
to the REAL python-binance user socket: none stops the stream, costs its subscription, or
changes the journal; the fills after them arrive as usual."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.exchange_support import fake_server as fake, limit, run
from tests.fake_binance_support import until
from tests.fakes.binance import FakeBinance
from tests.test_user_stream import resting_at, streaming

__all__ = ["fake"]  # the fixture


def hostile(coid: str, order_id: int) -> list[Any]:
    report = {"e": "executionReport", "s": "BTCUSDT", "c": coid, "C": "", "S": "BUY",
              "o": "LIMIT", "q": "0.002", "p": "1", "x": "TRADE", "X": "FILLED", "i": order_id,
              "l": "0.002", "z": "0.002", "L": "1", "n": "0", "N": "BTC", "t": 10**9,
              "O": 0, "Z": "0.002"}
    return [
        "not an event", 7, None, [], {}, {"e": None},
        {"e": ["executionReport"]}, {"e": {"nested": 1}}, {"e": 3.5},  # an unhashable kind
        {"e": "executionReport"},  # every field missing
        {"e": "executionReport", "s": ["BTCUSDT"], "S": "BUY", "z": "0"},
        {**report, "z": "NaN", "l": "NaN"},  # not a number
        {**report, "z": "Infinity"},
        {**report, "t": "not a trade id"},
        {**report, "S": "SIDEWAYS"},
        {**report, "c": "mb-BTCUSDT-999"},  # not journaled
        {"e": "outboundAccountPosition", "B": "garbage"},
        {"e": "balanceUpdate"},
    ]


def test_hostile_events_neither_end_the_stream_nor_touch_the_journal(
        fake: FakeBinance, tmp_path: Path) -> None:
    async def main() -> None:
        async with streaming(fake, tmp_path / "j.db") as desk:  # no polling at all
            rest_at, crossing = resting_at(fake)
            resting = await desk.broker.place("BTCUSDT", limit(1, "BUY", "0.002", rest_at))
            assert resting.order.status == "NEW"
            [ours] = fake.open_orders("BTCUSDT")
            fake.push_user_events(hostile("mb-BTCUSDT-1", int(ours["orderId"])))
            fake.set_price("BTCUSDT", crossing)  # the real fill comes after them
            await until(lambda: desk.order_status("mb-BTCUSDT-1") == "FILLED", timeout=10,
                        what="the real fill, after the hostile events")
            [fill] = desk.journal.order_fills("mb-BTCUSDT-1")
            [trade] = fake.trades("BTCUSDT")
            assert fill.exchange_trade_id == trade["id"]  # not the hostile 10**9
            assert desk.broker.stream_subscriptions == 1 and desk.broker.stream_healthy
            assert fake.user_stream_subscriptions() == 1
            assert desk.journal.get_order("mb-BTCUSDT-999") is None

    run(main())
