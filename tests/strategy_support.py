"""Shared by the strategy tests: the bundled klines as Bars, and running a strategy."""

from __future__ import annotations

import csv
import gzip
from functools import cache
from pathlib import Path

import msgspec
import numpy as np

from multibot.market.bar import Bar, Signal
from strategies.base import Strategy, safe_on_bar

LONG, FLAT = Signal.LONG, Signal.FLAT
ROOT = Path(__file__).resolve().parents[1]
KLINES = ROOT / "multibot" / "market" / "data" / "klines"


MS = {"1m": 60_000, "1h": 3_600_000}
BUILTIN_NAMES = ["bollinger", "ema_cross", "macd_cross", "rsi_revert", "sma_cross"]


@cache
def load_bars(symbol: str, interval: str = "1m") -> tuple[Bar, ...]:
    """Bundled klines (open_time,open,high,low,close,volume) as Bars."""
    with gzip.open(KLINES / f"{symbol}-{interval}.csv.gz", "rt", newline="") as fh:
        rows = [
            {**r, "symbol": symbol, "close_time": int(r["open_time"]) + MS[interval] - 1}
            for r in csv.DictReader(fh)
        ]
    return tuple(msgspec.convert(rows, list[Bar], strict=False))


def closes(symbol: str = "BTCUSDT") -> np.ndarray:
    return np.array([b.close for b in load_bars(symbol)])


def run(strategy: Strategy, bars: tuple[Bar, ...]) -> list[Signal]:
    return [s for b in bars if (s := safe_on_bar(strategy, b)) is not None]


def sma_reference(x: np.ndarray, period: int) -> np.ndarray:
    return np.convolve(x, np.ones(period) / period, mode="valid")
