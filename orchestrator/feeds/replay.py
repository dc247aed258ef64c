"""Replay of the bundled real Binance klines, all symbols on one shared clock."""

from __future__ import annotations

import numpy as np

from multibot.market.bar import Bar
from multibot.market.bundled import INTERVAL_MS, catalog, load_klines, symbols_for
from multibot.market.rules import bundled_rules
from multibot.wire.protocol import SymbolRules
from orchestrator.feeds.base import HISTORY_LIMIT, ClockedFeed, UnknownSymbol


def bars_from_array(symbol: str, rows: np.ndarray, step_ms: int) -> list[Bar]:
    return [
        Bar(symbol=symbol, open_time=int(t), close_time=int(t) + step_ms - 1, open=float(o),
            high=float(h), low=float(lo), close=float(c), volume=float(v))
        for t, o, h, lo, c, v in rows.tolist()
    ]


class ReplayFeed(ClockedFeed):
    name = "replay"

    def __init__(self, interval: str = "1m", cursor: int | None = None) -> None:
        if interval not in catalog():
            raise ValueError(
                f"no bundled data for interval {interval!r}; available: "
                f"{', '.join(sorted(catalog()))}"
            )
        self.interval = interval
        self._step_ms = INTERVAL_MS[interval]
        self._cursor = cursor
        self._data: dict[str, np.ndarray] = {}

    def validate(self, symbol: str) -> None:
        available = symbols_for(self.interval)
        if symbol not in available or symbol not in bundled_rules():
            elsewhere = sorted(i for i, syms in catalog().items() if symbol in syms)
            hint = f" (bundled for interval {', '.join(elsewhere)})" if elsewhere else ""
            raise UnknownSymbol(
                f"unknown symbol {symbol}: no bundled {self.interval} data{hint}; "
                f"available: {', '.join(available)}; any symbol works with --feed synthetic"
            )

    async def add(self, symbol: str) -> SymbolRules:
        self.validate(symbol)
        bars = load_klines(symbol, self.interval)
        self._data[symbol] = bars
        if self._cursor is None:  # leave room for a full warm-up before the first live bar
            self._cursor = int(bars["open_time"][min(HISTORY_LIMIT, len(bars) - 1)])
        return bundled_rules()[symbol]

    def remove(self, symbol: str) -> None:
        self._data.pop(symbol, None)

    def history(self, symbol: str, limit: int) -> list[Bar]:
        bars = self._data[symbol]
        if self._cursor is None:
            return []
        end = int(np.searchsorted(bars["open_time"], self._cursor, side="right"))
        rows = bars[max(0, end - min(limit, HISTORY_LIMIT)) : end]
        return bars_from_array(symbol, rows, self._step_ms)

    def step(self) -> list[Bar]:
        if not self._data or self._cursor is None or self.ended:
            return []
        self._cursor += self._step_ms
        out: list[Bar] = []
        for symbol, bars in self._data.items():
            i = int(np.searchsorted(bars["open_time"], self._cursor))
            if i < len(bars) and bars["open_time"][i] == self._cursor:  # gaps are skipped
                out.extend(bars_from_array(symbol, bars[i : i + 1], self._step_ms))
        return out

    @property
    def cursor(self) -> int | None:
        return self._cursor

    @property
    def ended(self) -> bool:
        if not self._data or self._cursor is None:
            return False
        return all(self._cursor >= int(bars["open_time"][-1]) for bars in self._data.values())
