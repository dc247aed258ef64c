"""The real Binance klines shipped inside the package (multibot/market/data/klines)."""

from __future__ import annotations

import gzip
import io
import re
from functools import cache
from importlib import resources

import numpy as np

INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
_FILE = re.compile(r"^([A-Z0-9]+)-(\w+)\.csv\.gz$")

KLINE_DTYPE = np.dtype(
    [("open_time", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"),
     ("volume", "f8")]
)


def _klines_dir() -> resources.abc.Traversable:
    return resources.files("multibot.market").joinpath("data", "klines")


@cache
def catalog() -> dict[str, tuple[str, ...]]:
    """interval -> symbols with bundled data for it."""
    found: dict[str, list[str]] = {}
    for entry in _klines_dir().iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.setdefault(match.group(2), []).append(match.group(1))
    return {interval: tuple(sorted(symbols)) for interval, symbols in found.items()}


def symbols_for(interval: str) -> tuple[str, ...]:
    return catalog().get(interval, ())


@cache
def bar_range(symbol: str, interval: str) -> tuple[int, int]:
    """Open times (ms) of the first and the last bundled bar, without parsing the rest."""
    raw = _klines_dir().joinpath(f"{symbol}-{interval}.csv.gz").read_bytes()
    lines = gzip.decompress(raw).rstrip().split(b"\n")
    return int(lines[1].split(b",", 1)[0]), int(lines[-1].split(b",", 1)[0])


@cache
def load_klines(symbol: str, interval: str) -> np.ndarray:
    """All bundled bars of one symbol as a structured array sorted by open_time."""
    raw = _klines_dir().joinpath(f"{symbol}-{interval}.csv.gz").read_bytes()
    text = gzip.decompress(raw).decode()
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=range(6),
                       dtype=np.float64, ndmin=2)
    bars = np.empty(len(table), dtype=KLINE_DTYPE)
    bars["open_time"] = table[:, 0].astype(np.int64)
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        bars[name] = table[:, i]
    return bars
