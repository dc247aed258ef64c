"""The fake's market: one seeded random walk per symbol, ticking on the wall clock, and the
klines aggregated from those ticks (plus generated history before the start).

Prices are held as integer tick counts and volumes as integer lot-step counts, so bars are
exact and cheap to update; they become Binance's 8-decimal strings only when rendered. A bar is
final once a tick lands in a later bar, and the REST rows and stream payloads are rendered from
the same ``Bar`` object, which is what makes a gap-fill after a reconnect line up exactly.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.fakes.binance.errors import f8
from tests.fakes.binance.symbols import SymbolRules

INTERVALS_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
    "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
    "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}
HISTORY_BARS = 1500  # more than one request of 1000: a client paging back finds more
KEEP_BARS = 1000  # closed live bars kept per interval (Binance serves at most 1000 a call)
UPDATE_EVERY_MS = 1000  # x=false kline updates at most this often (1s bars: every tick)
_MAX_HISTORY_SIGMA = 0.02  # per-bar stdev cap, so 1000 daily bars stay plausible
Event = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Bar:
    open_time: int
    interval_ms: int
    o: int
    h: int
    low: int
    c: int
    v: int = 0   # base volume, in lot steps
    q: int = 0   # quote volume, in ticks * lot steps
    n: int = 0
    tv: int = 0  # taker-buy base volume
    tq: int = 0  # taker-buy quote volume
    first: int = -1
    last: int = -1

    def add(self, price: int, qty: int, trade_id: int, taker_buy: bool) -> None:
        self.h = max(self.h, price)
        self.low = min(self.low, price)
        self.c = price
        self.v += qty
        self.q += qty * price
        self.n += 1
        if taker_buy:
            self.tv += qty
            self.tq += qty * price
        if self.first < 0:
            self.first = trade_id
        self.last = trade_id


class SymbolMarket:
    """The price path and bars of one symbol. Not thread-safe: the caller holds the lock."""

    def __init__(self, rules: SymbolRules, start: Decimal, seed: int, volatility: float,
                 tick_s: float, now_ms: int) -> None:
        self.rules = rules
        self.symbol = rules.symbol
        self._tick = rules.tick
        self._step = rules.step
        self._quote_unit = rules.tick * rules.step
        self.ticks = int(start / rules.tick)
        self._level = float(self.ticks)
        self._max_ticks = int(rules.max_price / rules.tick) if rules.max_price else None
        self._rng = random.Random(f"{seed}:{self.symbol}")
        self._seed = seed
        self._volatility = volatility
        self._tick_ms = max(tick_s * 1000.0, 1.0)
        self._pending: int | None = None
        self._trade_id = 0
        self.start_ms = now_ms
        self._start_ticks = self.ticks
        self._bars = {name: Bar(now_ms // iv * iv, iv, self.ticks, self.ticks, self.ticks,
                                self.ticks) for name, iv in INTERVALS_MS.items()}
        self._closed: dict[str, deque[Bar]] = {n: deque(maxlen=KEEP_BARS) for n in INTERVALS_MS}
        self._history: dict[str, list[Bar]] = {}
        self._last_update = dict.fromkeys(INTERVALS_MS, 0)

    # -- prices ------------------------------------------------------------------------------
    @property
    def price(self) -> Decimal:
        """The price a MARKET order fills at now (a pending set_price counts already)."""
        ticks = self._pending if self._pending is not None else self.ticks
        return ticks * self._tick

    def set_price(self, value: float) -> None:
        """The next tick trades exactly here; the walk continues from it."""
        self._pending = int(self.rules.snap_price(value) / self._tick)

    def next_trade_id(self) -> int:
        self._trade_id += 1
        return self._trade_id

    def _walk(self) -> int:
        if self._pending is not None:
            self._level, self._pending = float(self._pending), None
        else:
            self._level *= math.exp(self._rng.gauss(0.0, self._volatility))
        self._level = max(self._level, 1.0)
        if self._max_ticks is not None:
            self._level = min(self._level, float(self._max_ticks))
        return max(1, round(self._level))

    # -- ticking -----------------------------------------------------------------------------
    def advance(self, now_ms: int, wanted: set[str]) -> list[Event]:
        """One tick: a new price and one market trade; close, open and update bars. Returns the
        stream events for the streams in ``wanted`` (payloads are only built when wanted)."""
        previous, self.ticks = self.ticks, self._walk()
        price = self.ticks
        notional = math.exp(self._rng.gauss(math.log(200.0), 0.8))
        qty = max(1, round(notional / float(price * self._quote_unit)))
        taker_buy = price >= previous
        trade_id = self.next_trade_id()
        lower = self.symbol.lower()
        events: list[Event] = []
        if f"{lower}@trade" in wanted:
            events.append((f"{lower}@trade", {
                "e": "trade", "E": now_ms, "s": self.symbol, "t": trade_id,
                "p": f8(price * self._tick), "q": f8(qty * self._step), "T": now_ms,
                "m": not taker_buy, "M": True}))
        for name, iv in INTERVALS_MS.items():
            stream = f"{lower}@kline_{name}"
            bar = self._bars[name]
            open_time = now_ms // iv * iv
            if open_time > bar.open_time:
                for done in self._close_through(name, bar, open_time):
                    if stream in wanted:
                        events.append((stream, self.kline_event(done, name, True, now_ms)))
                bar = self._bars[name] = Bar(open_time, iv, price, price, price, price)
                self._last_update[name] = now_ms
            bar.add(price, qty, trade_id, taker_buy)
            due = name == "1s" or now_ms - self._last_update[name] >= UPDATE_EVERY_MS
            if stream in wanted and due:
                events.append((stream, self.kline_event(bar, name, False, now_ms)))
                self._last_update[name] = now_ms
        return events

    def _close_through(self, name: str, bar: Bar, open_time: int) -> list[Bar]:
        """Close ``bar`` and fill any bars without a tick (the loop stalled) up to open_time,
        as Binance does: flat at the last close, no volume."""
        done = [bar]
        iv = bar.interval_ms
        t = max(bar.open_time + iv, open_time - KEEP_BARS * iv)
        while t < open_time:
            done.append(Bar(t, iv, bar.c, bar.c, bar.c, bar.c))
            t += iv
        self._closed[name].extend(done)
        return done

    # -- rendering ---------------------------------------------------------------------------
    def kline_event(self, bar: Bar, name: str, closed: bool, now_ms: int) -> dict[str, Any]:
        tick, step, unit = self._tick, self._step, self._quote_unit
        return {"e": "kline", "E": now_ms, "s": self.symbol, "k": {
            "t": bar.open_time, "T": bar.open_time + bar.interval_ms - 1, "s": self.symbol,
            "i": name, "f": bar.first, "L": bar.last, "o": f8(bar.o * tick),
            "c": f8(bar.c * tick), "h": f8(bar.h * tick), "l": f8(bar.low * tick),
            "v": f8(bar.v * step), "n": bar.n, "x": closed, "q": f8(bar.q * unit),
            "V": f8(bar.tv * step), "Q": f8(bar.tq * unit), "B": "0"}}

    def _row(self, bar: Bar) -> list[Any]:
        tick, step, unit = self._tick, self._step, self._quote_unit
        return [bar.open_time, f8(bar.o * tick), f8(bar.h * tick), f8(bar.low * tick),
                f8(bar.c * tick), f8(bar.v * step), bar.open_time + bar.interval_ms - 1,
                f8(bar.q * unit), bar.n, f8(bar.tv * step), f8(bar.tq * unit), "0"]

    def klines(self, name: str, start: int | None, end: int | None, limit: int) -> list[list[Any]]:
        """GET /api/v3/klines: from startTime forwards, else the latest up to endTime; the bar
        being formed is the last one."""
        live = list(self._closed[name])
        room = max(0, HISTORY_BARS - len(live))
        bars = (self._history_of(name)[-room:] if room else []) + live + [self._bars[name]]
        if start is not None:
            bars = [b for b in bars if b.open_time >= start]
        if end is not None:
            bars = [b for b in bars if b.open_time <= end]
        chosen = bars[:limit] if start is not None else bars[-limit:]
        return [self._row(b) for b in chosen]

    def _history_of(self, name: str) -> list[Bar]:
        """HISTORY_BARS bars before the start, generated backwards from the start price so the
        last historic close is the start price; own seed, so it is the same on every run."""
        if name in self._history:
            return self._history[name]
        iv = INTERVALS_MS[name]
        rng = random.Random(f"{self._seed}:{self.symbol}:{name}:history")
        sigma = min(self._volatility * math.sqrt(iv / self._tick_ms), _MAX_HISTORY_SIGMA)
        level, closes = float(self._start_ticks), [self._start_ticks]
        for _ in range(HISTORY_BARS - 1):
            level = max(level / math.exp(rng.gauss(0.0, sigma)), 1.0)
            closes.append(max(1, round(level)))
        closes.reverse()
        first_open = self.start_ms // iv * iv - HISTORY_BARS * iv  # ends at the first live bar
        bars: list[Bar] = []
        previous = max(1, round(closes[0] / math.exp(rng.gauss(0.0, sigma))))
        for i, close in enumerate(closes):
            top, bottom = max(previous, close), min(previous, close)
            high = top + round(top * abs(rng.gauss(0.0, sigma / 2)))
            low = max(1, bottom - round(bottom * abs(rng.gauss(0.0, sigma / 2))))
            trades = rng.randint(20, 400)
            avg = max(1, round(200.0 / float(close * self._quote_unit)))
            volume = trades * avg
            taker = round(volume * rng.uniform(0.3, 0.7))
            mid = (previous + close) // 2 or 1
            bars.append(Bar(first_open + i * iv, iv, previous, high, low, close, volume,
                            volume * mid, trades, taker, taker * mid))
            previous = close
        self._history[name] = bars
        return bars


class Market:
    """Every symbol's market; the fake's lock guards it."""

    def __init__(self, rules: dict[str, SymbolRules], starts: dict[str, Decimal], seed: int,
                 volatility: float, tick_s: float, now_ms: int) -> None:
        self.symbols = {name: SymbolMarket(r, starts[name], seed, volatility, tick_s, now_ms)
                        for name, r in rules.items()}

    def __getitem__(self, symbol: str) -> SymbolMarket:
        return self.symbols[symbol]

    def advance(self, now_ms: int, wanted: set[str]) -> list[Event]:
        events: list[Event] = []
        for market in self.symbols.values():
            events.extend(market.advance(now_ms, wanted))
        return events
