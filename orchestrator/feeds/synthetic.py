"""A seeded random walk for any symbol, with Binance-like tick and step sizes."""

from __future__ import annotations

import math
import re
import time
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from multibot.market.bar import Bar
from multibot.market.bundled import INTERVAL_MS, catalog, load_klines
from multibot.market.rules import bundled_rules, synthetic_rules
from multibot.wire.protocol import SymbolRules
from orchestrator.feeds.base import HISTORY_LIMIT, ClockedFeed, UnknownSymbol

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_VOLATILITY = 0.002  # per-bar log-return standard deviation


@dataclass
class _Walk:
    rng: np.random.Generator
    price: float
    tick: float
    bars: deque[Bar] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))


def _start_price(symbol: str, rng: np.random.Generator) -> float:
    for interval in ("1d", "1h", "1m"):
        if symbol in catalog().get(interval, ()):
            return float(load_klines(symbol, interval)["close"][-1])
    return float(10 ** rng.uniform(-1, 3))


class SyntheticFeed(ClockedFeed):
    name = "synthetic"

    def __init__(self, interval: str = "1m", seed: int = 7, cursor: int | None = None) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval must be one of {', '.join(INTERVAL_MS)}")
        self.interval = interval
        self._step_ms = INTERVAL_MS[interval]
        self._seed = seed
        now_ms = int(time.time() * 1000)
        self._cursor = cursor if cursor is not None else now_ms - now_ms % self._step_ms
        self._walks: dict[str, _Walk] = {}
        self._served: set[str] = set()

    def validate(self, symbol: str) -> None:
        quote = next((q for q in QUOTE_ASSETS if symbol.endswith(q) and symbol != q), None)
        if not _SYMBOL.match(symbol) or quote is None:
            raise UnknownSymbol(
                f"unknown symbol {symbol}: a symbol is BASE+QUOTE in capitals, quote one of "
                f"{', '.join(QUOTE_ASSETS)} (e.g. BTCUSDT)"
            )

    def _rules(self, symbol: str, price: float) -> SymbolRules:
        return bundled_rules().get(symbol) or synthetic_rules(symbol, price)

    async def add(self, symbol: str) -> SymbolRules:
        self.validate(symbol)
        walk = self._walks.get(symbol)
        if walk is None:
            rng = np.random.default_rng([self._seed, zlib.crc32(symbol.encode()), self._cursor])
            price = _start_price(symbol, rng)
            tick = float(self._rules(symbol, price).tick_size)
            walk = _Walk(rng=rng, price=price, tick=tick)
            first = self._cursor - (HISTORY_LIMIT - 1) * self._step_ms
            walk.bars.extend(self._walk_bars(symbol, walk, first, HISTORY_LIMIT))
            self._walks[symbol] = walk
        self._served.add(symbol)
        return self._rules(symbol, walk.price)

    def remove(self, symbol: str) -> None:
        self._served.discard(symbol)  # keep the walk: a re-add continues the same path

    def history(self, symbol: str, limit: int) -> list[Bar]:
        bars = list(self._walks[symbol].bars)
        return bars[-min(limit, HISTORY_LIMIT):]

    def step(self) -> list[Bar]:
        if not self._served:
            return []
        self._cursor += self._step_ms
        out = []
        for symbol in sorted(self._served):
            walk = self._walks[symbol]
            bar = self._next_bar(symbol, walk, self._cursor)
            walk.bars.append(bar)
            out.append(bar)
        return out

    def _next_bar(self, symbol: str, walk: _Walk, open_time: int) -> Bar:
        """One live bar: scalar maths (numpy's per-call overhead dominates for one bar)."""
        rng, tick = walk.rng, walk.tick
        decimals = max(0, -math.floor(math.log10(tick)))

        def on_tick(x: float) -> float:
            return round(max(tick, round(x / tick) * tick), decimals)

        r_close, r_high, r_low = rng.normal(0.0, _VOLATILITY, size=3).tolist()
        open_ = on_tick(walk.price)
        close = on_tick(open_ * math.exp(r_close))
        high = max(on_tick(max(open_, close) * (1 + abs(r_high) / 2)), open_, close)
        low = min(on_tick(min(open_, close) * (1 - abs(r_low) / 2)), open_, close)
        walk.price = close
        return Bar(symbol=symbol, open_time=open_time, close_time=open_time + self._step_ms - 1,
                   open=open_, high=high, low=low, close=close,
                   volume=round(float(rng.lognormal(3.0, 1.0)), 3))

    def _walk_bars(self, symbol: str, walk: _Walk, first: int, count: int) -> list[Bar]:
        """``count`` consecutive bars from ``first`` (vectorised: hot-adding 200 symbols with
        1000 bars of history each must take well under a second)."""
        rng, tick = walk.rng, walk.tick
        decimals = max(0, -math.floor(math.log10(tick)))
        shocks = rng.normal(0.0, _VOLATILITY, size=(count, 3))
        volumes = np.round(rng.lognormal(3.0, 1.0, size=count), 3)

        def on_tick(x: np.ndarray) -> np.ndarray:
            return np.round(np.maximum(tick, np.round(x / tick) * tick), decimals)

        closes = on_tick(walk.price * np.exp(np.cumsum(shocks[:, 0])))
        opens = np.concatenate(([on_tick(np.array([walk.price]))[0]], closes[:-1]))
        top, bottom = np.maximum(opens, closes), np.minimum(opens, closes)
        highs = np.maximum(on_tick(top * (1 + np.abs(shocks[:, 1]) / 2)), top)
        lows = np.minimum(on_tick(bottom * (1 - np.abs(shocks[:, 2]) / 2)), bottom)
        walk.price = float(closes[-1])
        step = self._step_ms
        return [
            Bar(symbol=symbol, open_time=first + i * step, close_time=first + (i + 1) * step - 1,
                open=o, high=h, low=lo, close=c, volume=v)
            for i, (o, h, lo, c, v) in enumerate(zip(
                opens.tolist(), highs.tolist(), lows.tolist(), closes.tolist(),
                volumes.tolist(), strict=True))
        ]

    @property
    def cursor(self) -> int | None:
        return self._cursor
