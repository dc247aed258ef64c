"""Volatility indicators: Bollinger bands and ATR, incremental and aligned like TA-Lib."""

from __future__ import annotations

import math
from typing import NamedTuple

from strategies.indicators import Indicator

__all__ = ["ATR", "Bands", "BollingerBands"]


class Bands(NamedTuple):
    """Bollinger bands (TA-Lib's output order)."""

    upper: float
    middle: float
    lower: float


class BollingerBands(Indicator[Bands]):
    """SMA(period) +- k * population standard deviation (TA-Lib BBANDS with matype SMA).

    Why not running sums of x and x**2 (TA-Lib's way): they cancel catastrophically at high
    prices and drift. Instead the window is kept relative to a shift (its mean at the last
    recompute) and the squared deviations use the add/remove form of Welford's update, so
    rounding scales with the spread, not the price; both sums are recomputed exactly
    (math.fsum, two-pass) each time the ring buffer wraps, so nothing accumulates past one
    window. Cost: amortised O(1) per update.
    """

    __slots__ = ("_buf", "_m2", "_pos", "_shift", "_sum", "k", "std")
    _buf: list[float]
    _m2: float
    _pos: int
    _shift: float
    _sum: float
    std: float | None

    def __init__(self, period: int = 20, k: float = 2.0) -> None:
        super().__init__(period)
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"BollingerBands k must be a finite number > 0, got {k!r}")
        self.k = float(k)
        self.reset()

    @property
    def lookback(self) -> int:
        return self.period - 1

    def update(self, x: float) -> Bands | None:
        """Feed one price; return (upper, middle, lower), or None while warming up."""
        x = self._check(x)
        n, pos = self.period, self._pos
        old, self._buf[pos] = self._buf[pos], x
        self._pos = pos = pos + 1 if pos + 1 < n else 0
        self.count += 1
        if self.count < n:
            return None
        if pos == 0:  # the window just wrapped (or filled): recompute exactly
            self._recompute()
        else:  # sums of (v - shift): d is exact, deviations are small numbers
            shift, d = self._shift, x - old
            old_mean = self._sum / n
            self._sum += d
            change = d * ((x - shift - self._sum / n) + (old - shift - old_mean))
            self._m2 += change
            if self._m2 < abs(change) * 1e-8:  # cancelled to (almost) nothing: be exact
                self._recompute()
        mean = self._shift + self._sum / n
        self.std = std = math.sqrt(self._m2 / n) if self._m2 > 0.0 else 0.0
        self._value = Bands(mean + self.k * std, mean, mean - self.k * std)
        return self._value

    def _recompute(self) -> None:
        """Exact two-pass sums over the window (O(period); on wrap-around and cancellation)."""
        n = self.period
        self._shift = shift = math.fsum(self._buf) / n
        self._sum = total = math.fsum(v - shift for v in self._buf)  # ~0: shift's rounding
        self._m2 = math.fsum((v - shift) * (v - shift) for v in self._buf) - total * total / n

    def reset(self) -> None:
        super().reset()
        self._buf = [0.0] * self.period
        self._pos = 0
        self._shift = 0.0
        self._sum = 0.0
        self._m2 = 0.0
        self.std = None

    def __repr__(self) -> str:
        return f"BollingerBands({self.period}, {self.k}, value={self._value!r})"


class ATR(Indicator[float]):
    """Wilder's average true range, like TA-Lib: the first bar only provides a previous close,
    the first value (at input index ``period``) is the mean of the next ``period`` true ranges,
    then ``atr = (atr * (period - 1) + tr) / period``."""

    __slots__ = ("_prev_close", "_sum")
    _prev_close: float | None
    _sum: float

    def __init__(self, period: int = 14) -> None:
        super().__init__(period)
        self.reset()

    @property
    def lookback(self) -> int:
        return self.period

    def update(self, high: float, low: float, close: float) -> float | None:
        """Feed one bar; return the ATR, or None while seeding."""
        high, low, close = self._check(high), self._check(low), self._check(close)
        if low > high:
            raise ValueError(f"ATR({self.period}) got low {low!r} above high {high!r}")
        self.count += 1
        prev, self._prev_close = self._prev_close, close
        if prev is None:
            return None
        tr = max(high - low, abs(high - prev), abs(low - prev))
        n = self.period
        if self._value is None:
            self._sum += tr
            if self.count <= n:
                return None
            self._value = self._sum / n
        else:
            self._value = (self._value * (n - 1) + tr) / n
        return self._value

    def reset(self) -> None:
        super().reset()
        self._prev_close = None
        self._sum = 0.0
