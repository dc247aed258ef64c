"""A deterministic synthetic market for any symbol, with Binance-like tick and step sizes.

Each bar is a pure function of (seed, symbol, bar index = open time // interval): the same bar
has the same OHLCV whatever cursor the feed started from, across restarts and hot-adds, so a
bar seen before a crash is the bar seen after it. The log price is the start price's, plus
- a mean-reverting noise: an AR(1) filter of Gaussian shocks drawn per (seed, symbol, block
  of bars), restarted at a fixed anchor (the start of the previous block), so each value is a
  finite window of shocks computed in one fixed order;
- two slow deterministic swings (phases from the symbol), so strategies see trends and turns.
So prices stay in a band around the start price: a symbol never walks to dust.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import zlib
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from multibot.market.bar import Bar
from multibot.market.bundled import INTERVAL_MS, catalog, load_klines
from multibot.market.rules import bundled_rules, synthetic_rules
from multibot.wire.protocol import SymbolRules
from orchestrator.feeds.base import HISTORY_LIMIT, ClockedFeed, UnknownSymbol

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_VOLATILITY = 0.002  # per-bar log-return standard deviation of the shocks
_PHI = 0.99  # AR(1) memory per bar: deviations halve in about 69 bars
_BLOCK = 512  # bars computed together; _PHI ** _BLOCK < 0.6 %: the anchor is forgotten
_SWINGS = ((0.06, 1440.0), (0.03, 240.0))  # (amplitude in log price, period in bars)
_CACHED_BLOCKS = 3  # per symbol: the live block and what a full warm-up history spans


@dataclass(frozen=True)
class _Block:
    """OHLCV of ``_BLOCK`` consecutive bars."""

    opens: np.ndarray
    highs: np.ndarray
    lows: np.ndarray
    closes: np.ndarray
    volumes: np.ndarray


def _start_price(symbol: str, rng: np.random.Generator) -> float:
    for interval in ("1d", "1h", "1m"):
        if symbol in catalog().get(interval, ()):
            return float(load_klines(symbol, interval)["close"][-1])
    return float(10 ** rng.uniform(-1, 3))


class _Path:
    """One symbol's price path, a block of bars at a time (a few blocks cached)."""

    def __init__(self, seed: int, symbol: str, step_ms: int) -> None:
        self.symbol = symbol
        self._key = [seed, zlib.crc32(symbol.encode())]
        rng = np.random.default_rng([*self._key, 0])
        self.start_price = _start_price(symbol, rng)
        self._phases = rng.uniform(0.0, 2 * math.pi, size=len(_SWINGS))
        self.tick = 0.0  # set by the feed from the symbol's rules
        self._step = step_ms
        self._blocks: dict[int, _Block] = {}
        self._closes: dict[int, np.ndarray] = {}

    def _shocks(self, block: int) -> np.ndarray:
        """(_BLOCK, 4) standard normals of ``block``: close, high, low, volume."""
        if block < 0:
            return np.zeros((_BLOCK, 4))
        return np.random.default_rng([*self._key, 1, block]).standard_normal((_BLOCK, 4))

    def _on_tick(self, x: np.ndarray) -> np.ndarray:
        tick = self.tick
        decimals = max(0, -math.floor(math.log10(tick)))
        return np.round(np.maximum(tick, np.round(x / tick) * tick), decimals)

    def _raw_closes(self, block: int, shocks: np.ndarray | None = None) -> np.ndarray:
        closes = self._closes.get(block)
        if closes is None:
            if shocks is None:
                shocks = self._shocks(block)
            window = np.concatenate((self._shocks(block - 1)[:, 0], shocks[:, 0])) * _VOLATILITY
            # the AR(1) from zero at the anchor, in one fixed order: the same floats every time
            noise = list(itertools.accumulate(window.tolist(), lambda x, e: _PHI * x + e))
            index = np.arange(block * _BLOCK, (block + 1) * _BLOCK, dtype=np.float64)
            swing = sum(amplitude * np.sin(2 * math.pi * index / period + phase)
                        for (amplitude, period), phase in zip(_SWINGS, self._phases,
                                                              strict=True))
            log_dev = np.array(noise[_BLOCK:]) + swing
            closes = self._on_tick(self.start_price * np.exp(log_dev))
            self._closes[block] = closes
            _evict(self._closes, block)
        return closes

    def block(self, block: int) -> _Block:
        cached = self._blocks.get(block)
        if cached is not None:
            return cached
        shocks = self._shocks(block)
        closes = self._raw_closes(block, shocks)
        opens = np.concatenate((self._raw_closes(block - 1)[-1:], closes[:-1]))
        top, bottom = np.maximum(opens, closes), np.minimum(opens, closes)
        wick = _VOLATILITY / 2
        highs = np.maximum(self._on_tick(top * (1 + np.abs(shocks[:, 1]) * wick)), top)
        lows = np.minimum(self._on_tick(bottom * (1 - np.abs(shocks[:, 2]) * wick)), bottom)
        volumes = np.round(np.exp(3.0 + shocks[:, 3]), 3)
        made = _Block(opens=opens, highs=highs, lows=lows, closes=closes, volumes=volumes)
        self._blocks[block] = made
        _evict(self._blocks, block)
        return made

    def bar(self, index: int) -> Bar:
        """The bar with open time ``index`` intervals after the epoch."""
        b, i = divmod(index, _BLOCK)
        made = self.block(b)
        open_time = index * self._step
        return Bar(symbol=self.symbol, open_time=open_time, close_time=open_time + self._step - 1,
                   open=made.opens.item(i), high=made.highs.item(i), low=made.lows.item(i),
                   close=made.closes.item(i), volume=made.volumes.item(i))

    def bars(self, first: int, count: int) -> list[Bar]:
        """``count`` consecutive bars from index ``first``, oldest first."""
        out: list[Bar] = []
        step, symbol = self._step, self.symbol
        index, end = first, first + count
        while index < end:
            b, i = divmod(index, _BLOCK)
            j = min(_BLOCK, i + end - index)
            made = self.block(b)
            columns = (made.opens[i:j].tolist(), made.highs[i:j].tolist(),
                       made.lows[i:j].tolist(), made.closes[i:j].tolist(),
                       made.volumes[i:j].tolist())
            out += [Bar(symbol=symbol, open_time=(index + k) * step,
                        close_time=(index + k + 1) * step - 1, open=o, high=h, low=lo, close=c,
                        volume=v)
                    for k, (o, h, lo, c, v) in enumerate(zip(*columns, strict=True))]
            index += j - i
        return out


_Cached = TypeVar("_Cached")


def _evict(cache: dict[int, _Cached], newest: int) -> None:
    """Keep the ``_CACHED_BLOCKS`` blocks nearest ``newest`` (older ones are recomputed)."""
    if len(cache) > _CACHED_BLOCKS:
        for block in sorted(cache, key=lambda b: abs(newest - b))[_CACHED_BLOCKS:]:
            del cache[block]


class SyntheticFeed(ClockedFeed):
    name = "synthetic"

    def __init__(self, interval: str = "1m", seed: int = 7, cursor: int | None = None) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval must be one of {', '.join(INTERVAL_MS)}")
        self.interval = interval
        self._step_ms = INTERVAL_MS[interval]
        self._seed = seed
        now_ms = int(time.time() * 1000)
        start = cursor if cursor is not None else now_ms
        self._cursor = start - start % self._step_ms
        self._paths: dict[str, _Path] = {}
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
        path = self._paths.get(symbol)
        if path is None:
            path = _Path(self._seed, symbol, self._step_ms)
            path.tick = float(self._rules(symbol, path.start_price).tick_size)
            self._paths[symbol] = path
        self._served.add(symbol)
        return self._rules(symbol, path.start_price)

    def remove(self, symbol: str) -> None:
        self._served.discard(symbol)

    def history(self, symbol: str, limit: int) -> list[Bar]:
        count = max(0, min(limit, HISTORY_LIMIT))
        last = self._cursor // self._step_ms
        return self._paths[symbol].bars(last - count + 1, count)

    def step(self) -> list[Bar]:
        if not self._served:
            return []
        self._cursor += self._step_ms
        index = self._cursor // self._step_ms
        return [self._paths[symbol].bar(index) for symbol in sorted(self._served)]

    @property
    def cursor(self) -> int | None:
        return self._cursor
