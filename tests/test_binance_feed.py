"""BinanceFeed against the real python-binance client and the local fake Binance (127.0.0.1).

1s bars, so bars close every second. Every test runs under one asyncio deadline and tears down
its feed, client and fake even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.ws.reconnecting_websocket import ReconnectingWebsocket

from multibot.market.bar import Bar
from multibot.market.rules import load_rules
from orchestrator.feeds.base import HISTORY_LIMIT, FeedError, UnknownSymbol
from orchestrator.feeds.binance import BinanceFeed
from tests.fakes.binance import FakeBinance

STEP = 1000
TEST_DEADLINE_S = 30.0


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(api_key="k", api_secret="s", tick_s=0.1) as server:
        yield server


class RestAdapter:
    """KlineSource over python-binance's AsyncClient (the product uses its exchange client)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.gate: asyncio.Event | None = None  # when set, calls with a start time wait on it
        self.waiting = 0

    async def klines(self, symbol: str, interval: str, start_ms: int | None = None,
                     limit: int = 1000) -> list[list[Any]]:
        if self.gate is not None and start_ms is not None:
            self.waiting += 1
            await self.gate.wait()
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        rows: list[list[Any]] = await self.client.get_klines(**params)
        return rows


class Harness:
    def __init__(self, fake: FakeBinance, client: AsyncClient, feed: BinanceFeed,
                 rest: RestAdapter) -> None:
        self.fake, self.client, self.feed, self.rest = fake, client, feed, rest
        self.got: dict[str, list[Bar]] = {}
        self.task: asyncio.Task[None] | None = None

    def on_bars(self, bars: list[Bar]) -> None:
        for bar in bars:
            self.got.setdefault(bar.symbol, []).append(bar)

    def start(self) -> None:
        self.task = asyncio.create_task(self.feed.run(self.on_bars))

    def times(self, symbol: str) -> list[int]:
        return [b.open_time for b in self.got.get(symbol, [])]

    def count(self, symbol: str) -> int:
        return len(self.got.get(symbol, []))

    async def until(self, probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.task is not None and self.task.done():
                self.task.result()  # the feed died: show why
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"last value {value!r}; stats {self.feed.stats}")
            await asyncio.sleep(0.05)

    async def more_bars(self, symbols: list[str], n: int, timeout: float = 10.0) -> None:
        target = {s: self.count(s) + n for s in symbols}
        await self.until(lambda: all(self.count(s) >= c for s, c in target.items()),
                         f"{n} more bars of {symbols}", timeout)


@contextlib.asynccontextmanager
async def harness(fake: FakeBinance, **options: Any) -> AsyncIterator[Harness]:
    class FakeAsyncClient(AsyncClient):  # type: ignore[misc]
        API_URL = fake.rest_url

    client = await FakeAsyncClient.create("k", "s")
    try:
        rules = load_rules(await client.get_exchange_info())

        def sockets() -> BinanceSocketManager:
            bsm = BinanceSocketManager(client, max_queue_size=10_000)
            bsm.STREAM_URL = fake.stream_url
            return bsm

        rest = RestAdapter(client)
        feed = BinanceFeed(interval="1s", rules=rules, rest=rest, socket_manager=sockets,
                           **options)
        h = Harness(fake, client, feed, rest)
        try:
            yield h
        finally:
            if h.task is not None:
                h.task.cancel()
                await asyncio.wait([h.task], timeout=8)
            started = time.monotonic()
            await asyncio.wait_for(feed.close(), 8)
            assert time.monotonic() - started < 5, "close() must be bounded"
    finally:
        await client.close_connection()


def run(body: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(body(), TEST_DEADLINE_S))


def assert_consecutive(h: Harness, symbol: str) -> None:
    times = h.times(symbol)
    assert times, f"no bars of {symbol}"
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != STEP]
    assert not gaps, f"{symbol}: not consecutive (duplicates or holes) at {gaps[:5]}"


async def assert_equal_rest(h: Harness, symbol: str) -> None:
    bars = h.got[symbol]
    rows = await h.client.get_klines(symbol=symbol, interval="1s",
                                     startTime=bars[0].open_time, limit=len(bars))
    rest = {int(r[0]): r for r in rows}
    for bar in bars:
        r = rest[bar.open_time]
        assert (bar.close_time, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            int(r[6]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])), bar


def test_bars_of_three_symbols_flow_and_equal_rest(fake: FakeBinance) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]

    async def body() -> None:
        async with harness(fake) as h:
            for s in symbols:
                rules = await h.feed.add(s)
                assert rules.symbol == s
            assert await h.feed.add("BTCUSDT") is not None  # idempotent
            warm = {s: h.feed.history(s, HISTORY_LIMIT) for s in symbols}
            for s in symbols:
                assert len(warm[s]) == HISTORY_LIMIT
                assert all(b.open_time - a.open_time == STEP
                           for a, b in itertools.pairwise(warm[s]))
            assert h.feed.cursor is None
            h.start()
            await h.more_bars(symbols, 3)
            assert h.fake.ws_connections() == 1
            assert h.fake.subscriptions() == {f"{s.lower()}@kline_1s" for s in symbols}
            for s in symbols:
                assert_consecutive(h, s)
                assert h.times(s)[0] == warm[s][-1].open_time + STEP  # no hole after warm-up
                await assert_equal_rest(h, s)
                assert h.feed.history(s, 2) == h.got[s][-2:]
            assert h.feed.cursor == max(h.times(s)[-1] for s in symbols)
            assert h.feed.stats.streams == 3 and h.feed.stats.connections == 1
            assert h.feed.ended is False

    run(body)


def test_hot_add_and_remove_leave_the_others_alone(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT"):
                await h.feed.add(s)
            h.start()
            await h.more_bars(["BTCUSDT", "ETHUSDT", "XRPUSDT"], 2)
            await h.feed.add("SOLUSDT")
            h.feed.remove("ETHUSDT")
            eth_seen = h.count("ETHUSDT")
            await h.more_bars(["BTCUSDT", "XRPUSDT", "SOLUSDT"], 3)
            want = {"btcusdt@kline_1s", "xrpusdt@kline_1s", "solusdt@kline_1s"}
            await h.until(lambda: h.fake.subscriptions() == want, "SUBSCRIBE and UNSUBSCRIBE")
            assert h.count("ETHUSDT") == eth_seen  # stopped at once
            assert h.feed.history("ETHUSDT", 5) == []
            for s in ("BTCUSDT", "XRPUSDT", "SOLUSDT"):
                assert_consecutive(h, s)
            assert h.feed.stats.reconnects == 0 and h.fake.ws_connections() == 1

    run(body)


def test_drop_reconnects_resubscribes_and_gap_fills(fake: FakeBinance,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.feeds")
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]

    async def body() -> None:
        async with harness(fake) as h:
            for s in symbols[:2]:
                await h.feed.add(s)
            h.start()
            await h.more_bars(symbols[:2], 1)
            await h.feed.add(symbols[2])  # SUBSCRIBEd: not in the connection's URL
            await h.more_bars(symbols, 2)
            h.fake.drop_streams()
            dropped_at = int(time.time() * 1000)
            await h.until(lambda: h.feed.stats.reconnects >= 1, "a reconnect")
            await h.until(lambda: all(h.times(s)[-1] > dropped_at + 2 * STEP for s in symbols),
                          "bars after the drop")
            await h.until(lambda: len(h.fake.subscriptions()) == 3, "resubscribed")
            for s in symbols:
                assert_consecutive(h, s)
                await assert_equal_rest(h, s)
            assert h.feed.stats.gap_filled_bars >= 1  # python-binance waits >= 1 s: a bar closed
            assert "reconnected by python-binance" in caplog.text
            assert "gap fill after reconnect" in caplog.text

    run(body)


def test_own_reconnect_after_python_binance_gives_up(fake: FakeBinance,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReconnectingWebsocket, "MAX_RECONNECTS", 0)  # give up at the first drop

    async def body() -> None:
        async with harness(fake, reconnect_backoff_s=(0.3,)) as h:
            await h.feed.add("BTCUSDT")
            h.start()
            await h.more_bars(["BTCUSDT"], 2)
            h.fake.drop_streams()
            await h.until(lambda: h.feed.stats.reconnects >= 1, "our own reconnect")
            await h.more_bars(["BTCUSDT"], 2)
            assert_consecutive(h, "BTCUSDT")
            assert h.fake.ws_connections() == 1

    run(body)


def test_a_gap_rest_cannot_fill_delays_bars_but_never_skips_them(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            await h.feed.add("BTCUSDT")
            h.start()
            await h.more_bars(["BTCUSDT"], 2)
            # the gap fill after the reconnect, and the next bar's, both fail
            h.fake.fail("5xx", times=2, path="/api/v3/klines")
            h.fake.drop_streams()
            await h.until(lambda: h.feed.stats.deferred_bars >= 1, "a bar held back")
            await h.more_bars(["BTCUSDT"], 3)
            assert_consecutive(h, "BTCUSDT")  # late, in order, nothing missing
            await assert_equal_rest(h, "BTCUSDT")

    run(body)


def kline_message(symbol: str, bar: Bar, closed: bool, price: str) -> dict[str, Any]:
    return {"stream": f"{symbol.lower()}@kline_1s", "data": {
        "e": "kline", "E": bar.close_time + 1, "s": symbol, "k": {
            "t": bar.open_time, "T": bar.close_time, "s": symbol, "i": "1s", "o": price,
            "c": price, "h": price, "l": price, "v": "1", "x": closed}}}


def test_duplicates_and_unserved_or_open_bars_are_never_delivered(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            await h.feed.add("BTCUSDT")
            h.start()
            await h.more_bars(["BTCUSDT"], 2)
            older, last = h.got["BTCUSDT"][-2:]
            future = Bar(**{**msgspec.structs.asdict(last), "open_time": last.open_time
                            + 3 * STEP, "close_time": last.close_time + 3 * STEP})
            # As if the exchange had resent old bars, sent another symbol's, and an open bar:
            # straight into python-binance's queue, the path every message takes.
            queue = h.feed._conns[0]._sock._queue
            for message in (kline_message("BTCUSDT", last, True, "1.0"),
                            kline_message("BTCUSDT", older, True, "1.0"),
                            kline_message("ADAUSDT", last, True, "1.0"),
                            kline_message("BTCUSDT", future, False, "1.0")):
                queue.put_nowait(message)
            await h.until(lambda: h.feed.stats.duplicates_dropped == 2, "two duplicates")
            await h.more_bars(["BTCUSDT"], 4)
            assert set(h.got) == {"BTCUSDT"}
            assert_consecutive(h, "BTCUSDT")
            await assert_equal_rest(h, "BTCUSDT")

    run(body)


def test_close_is_bounded_when_the_peer_is_gone(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            await h.feed.add("BTCUSDT")
            h.start()
            await h.more_bars(["BTCUSDT"], 1)
            await asyncio.to_thread(fake.stop)
            await h.until(lambda: not h.feed._conns[0].connected, "the drop noticed")
            started = time.monotonic()
            await asyncio.wait_for(h.feed.close(), 8)  # while run() is still running
            assert time.monotonic() - started < 3

    run(body)


def test_many_adds_are_batched_within_the_message_rate(fake: FakeBinance) -> None:
    others = ["ETHUSDT", "XRPUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT"]

    async def body() -> None:
        async with harness(fake) as h:
            await h.feed.add("BTCUSDT")
            h.start()
            await h.more_bars(["BTCUSDT"], 1)
            # the adds finish together (their last warm-up call is held until all wait)
            h.rest.gate = gate = asyncio.Event()
            adds = asyncio.gather(*(h.feed.add(s) for s in others))
            await h.until(lambda: h.rest.waiting == len(others), "the adds' warm-up")
            gate.set()
            h.rest.gate = None
            await adds
            want = {f"{s.lower()}@kline_1s" for s in ["BTCUSDT", *others]}
            await h.until(lambda: h.fake.subscriptions() == want, "all subscribed")
            assert h.feed.stats.subscribe_messages == 1  # batched, not one per symbol
            # churn: every change its own message; paced, the fake would close us otherwise
            for _ in range(6):
                h.feed.remove("DOGEUSDT")
                await asyncio.sleep(0.08)
                await h.feed.add("DOGEUSDT")
                await asyncio.sleep(0.08)
            await h.until(lambda: h.fake.subscriptions() == want, "churn settled", 15)
            await h.more_bars(["BTCUSDT", *others], 2)
            assert h.feed.stats.reconnects == 0 and h.fake.ws_connections() == 1
            for s in ["BTCUSDT", *others[:-1]]:
                assert_consecutive(h, s)

    run(body)


def test_full_connection_opens_another(fake: FakeBinance) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]

    async def body() -> None:
        async with harness(fake, max_streams_per_connection=2) as h:
            for s in symbols:
                await h.feed.add(s)
            h.start()
            await h.more_bars(symbols, 2)
            assert h.fake.ws_connections() == 2 and h.feed.stats.connections == 2
            h.feed.remove("XRPUSDT")  # the second connection's only stream: it is closed
            await h.until(lambda: h.fake.ws_connections() == 1, "the empty connection closed")
            assert h.feed.stats.connections == 1
            for s in symbols:
                assert_consecutive(h, s)

    run(body)


def test_rest_failure_on_add_is_a_feed_error(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            fake.fail("5xx", times=1, path="/api/v3/klines")
            with pytest.raises(FeedError, match="BTCUSDT"):
                await h.feed.add("BTCUSDT")
            assert h.feed.stats.streams == 0
            await h.feed.add("BTCUSDT")  # the failure was transient
            assert len(h.feed.history("BTCUSDT", 10)) == 10

    run(body)


def test_unknown_symbol_and_bad_interval(fake: FakeBinance) -> None:
    async def body() -> None:
        async with harness(fake) as h:
            with pytest.raises(UnknownSymbol, match="not a trading symbol") as info:
                h.feed.validate("btcusdt")
            assert "BTCUSDT" in str(info.value)
            with pytest.raises(UnknownSymbol):
                await h.feed.add("NOPEUSDT")
            def never() -> BinanceSocketManager:
                raise AssertionError("no socket for a refused feed")

            with pytest.raises(ValueError, match="interval"):
                BinanceFeed(interval="7m", rules={}, rest=RestAdapter(h.client),
                            socket_manager=never)

    run(body)
