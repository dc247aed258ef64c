"""The synthetic feed: each bar a pure function of (seed, symbol, bar time), whatever cursor
the feed started from; prices stay in a band around the start price over a long span."""

from __future__ import annotations

import asyncio
import math

from multibot.market.bar import Bar
from multibot.market.bundled import INTERVAL_MS
from orchestrator.feeds.synthetic import SyntheticFeed

STEP = INTERVAL_MS["1m"]
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SYMBOLS = ("BTCUSDT", "ZZZUSDT", "PEPEUSDT")  # bundled data, and none (a random start price)


def _feed(cursor: int, symbols: tuple[str, ...] = SYMBOLS, seed: int = 7) -> SyntheticFeed:
    feed = SyntheticFeed("1m", seed=seed, cursor=cursor)
    for symbol in symbols:
        asyncio.run(feed.add(symbol))
    return feed


def _seen(feed: SyntheticFeed, steps: int) -> dict[tuple[str, int], Bar]:
    """Every bar the feed hands out: each symbol's history, then ``steps`` live steps."""
    bars = [bar for symbol in SYMBOLS for bar in feed.history(symbol, 1000)]
    for _ in range(steps):
        bars += feed.step()
    return {(bar.symbol, bar.open_time): bar for bar in bars}


def test_the_same_bar_time_is_the_same_bar_whatever_the_cursor_it_started_from() -> None:
    early = _seen(_feed(T0), 1500)
    late = _seen(_feed(T0 + 777 * STEP), 900)  # as after a restart, mid-block
    overlap = early.keys() & late.keys()
    assert len(overlap) >= 3 * 1700
    assert all(early[key] == late[key] for key in overlap)
    other_seed = _seen(_feed(T0, seed=8), 10)
    assert any(other_seed[key] != early[key] for key in other_seed.keys() & early.keys())


def test_a_hot_added_symbol_gets_the_bars_it_would_have_had() -> None:
    alone = _feed(T0, ("BTCUSDT",))
    for _ in range(300):
        alone.step()
    asyncio.run(alone.add("ZZZUSDT"))
    later = {bar.open_time: bar for bar in alone.history("ZZZUSDT", 1000) + alone.step()
             if bar.symbol == "ZZZUSDT"}
    from_start = {bar.open_time: bar for bar in _feed(T0 + 301 * STEP, ("ZZZUSDT",))
                  .history("ZZZUSDT", 1000)}
    assert len(later.keys() & from_start.keys()) == 1000
    assert all(later[t] == from_start[t] for t in later.keys() & from_start.keys())


def test_bars_are_consistent_and_prices_stay_in_a_band_over_a_long_span() -> None:
    feed = _feed(T0)
    start = {symbol: feed.history(symbol, 1)[0].close for symbol in SYMBOLS}
    last = {symbol: start[symbol] for symbol in SYMBOLS}
    low = dict(start)
    high = dict(start)
    for _ in range(100_000):  # ~70 days of 1m bars
        for bar in feed.step():
            assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
            assert bar.open == last[bar.symbol]  # each bar opens where the last one closed
            last[bar.symbol] = bar.close
            low[bar.symbol] = min(low[bar.symbol], bar.low)
            high[bar.symbol] = max(high[bar.symbol], bar.high)
    for symbol in SYMBOLS:
        assert 0.6 * start[symbol] < low[symbol] and high[symbol] < 1.6 * start[symbol], symbol
        # ... but not flat: swings of several per cent to trade
        assert math.log(high[symbol] / low[symbol]) > 0.1, symbol
