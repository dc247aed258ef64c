"""Market data and signal types shared by strategies, workers and feeds."""

from __future__ import annotations

import enum

import msgspec

# Bars of history a worker warms up on (the most a feed serves it); also the longest period a
# built-in strategy accepts: a longer window could never fill from the history a worker gets.
HISTORY_LIMIT = 1000


class Bar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One closed kline. Times are epoch milliseconds (UTC), as Binance sends them."""

    symbol: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Signal(enum.Enum):
    """What a strategy wants the symbol's position to be (spot: long or flat)."""

    LONG = "long"
    FLAT = "flat"
