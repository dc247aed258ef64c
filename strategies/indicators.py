"""Incremental indicators: O(1) work per update, plain float state.

Every indicator has ``update(...) -> value | None`` (None until ready), ``value``, ``ready``,
``count``, ``lookback`` and ``reset()``. Most are fed one price; ATR (in
:mod:`strategies.volatility`, with the Bollinger bands) is fed ``high, low, close``. MACD and
the bands return a named tuple of their lines. Outputs follow TA-Lib's conventions (seeding,
and alignment: the first value comes after ``lookback`` inputs, exactly where TA-Lib's first
non-NaN is), checked against TA-Lib in tests/test_indicators.py. Non-finite inputs raise
ValueError, so one bad tick can never poison the state silently.
"""

from __future__ import annotations

import abc
import math
from collections import deque
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from strategies.vector import Floats

__all__ = ["EMA", "MACD", "RSI", "SMA", "Crossover", "Indicator", "MACDValue"]

T = TypeVar("T")
_isfinite = math.isfinite
_fsum = math.fsum


def _period(owner: str, key: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ValueError naming ``owner`` and ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} {key} must be an int >= 1, got {value!r}")
    return value


class Indicator(abc.ABC, Generic[T]):
    """Shared state and API of the incremental indicators; ``update``'s inputs vary by kind."""

    __slots__ = ("_value", "count", "period")

    def __init__(self, period: int) -> None:
        self.period = _period(type(self).__name__, "period", period)
        self.count = 0
        self._value: T | None = None

    @property
    def value(self) -> T | None:
        """Latest value, or None while warming up."""
        return self._value

    @property
    def ready(self) -> bool:
        """True once ``value`` is defined."""
        return self._value is not None

    @property
    @abc.abstractmethod
    def lookback(self) -> int:
        """Inputs consumed before the first value (TA-Lib's lookback): value at index lookback."""

    def reset(self) -> None:
        """Forget all state."""
        self.count = 0
        self._value = None

    def _check(self, x: float) -> float:
        if not math.isfinite(x):
            raise ValueError(f"{type(self).__name__}({self.period}) got non-finite input {x!r}")
        return float(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.period}, value={self._value!r})"


class SMA(Indicator[float]):
    """Simple moving average: the correctly rounded sum of the last ``period`` values (a
    ring buffer, ``math.fsum``) divided by ``period``.

    Exact, not a running sum: the value depends only on the window, never on how much history
    came before it, so a worker restarted on other history, the backtest and the live worker
    compute the same float, and ``strategies.vector.sma`` reproduces it bit for bit.
    """

    __slots__ = ("_buf", "_pos")
    _buf: list[float]
    _pos: int

    def __init__(self, period: int) -> None:
        super().__init__(period)
        self.reset()

    @staticmethod
    def series(values: Floats, period: int) -> Floats:
        """``update`` over a whole series at once, bit for bit (NaN for None); numpy."""
        from strategies.vector import sma

        return sma(values, period)

    @staticmethod
    def series_many(values: Floats, periods: Sequence[int]) -> list[Floats]:
        """``series`` for each of ``periods`` (one exact prefix sum for them all)."""
        from strategies.vector import smas

        return smas(values, periods)

    @property
    def lookback(self) -> int:
        return self.period - 1

    def update(self, x: float) -> float | None:
        """Feed one value; return the mean of the last ``period`` values, or None."""
        if not _isfinite(x):
            self._check(x)  # raises
        period, pos = self.period, self._pos
        self._buf[pos] = float(x)
        pos += 1
        self._pos = pos if pos < period else 0
        self.count = count = self.count + 1
        if count >= period:
            self._value = value = _fsum(self._buf) / period
            return value
        return None

    def reset(self) -> None:
        super().reset()
        self._buf = [0.0] * self.period
        self._pos = 0


class EMA(Indicator[float]):
    """Exponential moving average, alpha = 2 / (period + 1), seeded with the SMA of the first
    ``period`` values (as TA-Lib does)."""

    __slots__ = ("_seed", "alpha")

    def __init__(self, period: int) -> None:
        super().__init__(period)
        self.alpha = 2.0 / (period + 1)
        self._seed = 0.0

    @staticmethod
    def series(values: Floats, period: int) -> Floats:
        """``update`` over a whole series at once, bit for bit (NaN for None); numpy."""
        from strategies.vector import ema

        return ema(values, period)

    @staticmethod
    def series_many(values: Floats, periods: Sequence[int]) -> list[Floats]:
        """``series`` for each of ``periods``."""
        from strategies.vector import ema

        return [ema(values, period) for period in periods]

    @property
    def lookback(self) -> int:
        return self.period - 1

    def update(self, x: float) -> float | None:
        """Feed one value; return the new average, or None during the seed window."""
        x = self._check(x)
        self.count += 1
        ema = self._value
        if ema is not None:
            self._value = ema + self.alpha * (x - ema)
        else:
            self._seed += x
            if self.count == self.period:
                self._value = self._seed / self.period
        return self._value

    def reset(self) -> None:
        super().reset()
        self._seed = 0.0


class RSI(Indicator[float]):
    """Wilder's RSI. Like TA-Lib, the averages are seeded with plain means of the first
    ``period`` gains and losses, so the first value comes after ``period + 1`` prices.

    One deliberate difference: when nothing moved at all (average gain + loss == 0) the RSI is
    a neutral 50, where TA-Lib returns 0, which would read as deeply oversold.
    """

    __slots__ = ("_gain", "_loss", "_prev")
    _gain: float
    _loss: float
    _prev: float | None

    def __init__(self, period: int = 14) -> None:
        super().__init__(period)
        self.reset()

    @property
    def lookback(self) -> int:
        return self.period

    def update(self, x: float) -> float | None:
        """Feed one price; return RSI in [0, 100], or None while seeding."""
        x = self._check(x)
        self.count += 1
        prev, self._prev = self._prev, x
        if prev is None:
            return None
        diff, n = x - prev, self.period
        if self._value is None:
            if diff < 0:
                self._loss -= diff
            else:
                self._gain += diff
            if self.count <= n:
                return None
            self._loss /= n
            self._gain /= n
        else:  # same operation order as TA-Lib, so results agree to the last bits
            loss, gain = self._loss * (n - 1), self._gain * (n - 1)
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            self._loss, self._gain = loss / n, gain / n
        total = self._gain + self._loss
        self._value = 100.0 * (self._gain / total) if total > 0.0 else 50.0
        return self._value

    def reset(self) -> None:
        super().reset()
        self._prev = None
        self._gain = 0.0
        self._loss = 0.0


class MACDValue(NamedTuple):
    """MACD line, its signal line, and their difference (TA-Lib's output order)."""

    macd: float
    signal: float
    hist: float


class MACD(Indicator[MACDValue]):
    """MACD aligned like TA-Lib: the slow EMA is seeded with the SMA of the first ``slow``
    prices and the fast EMA is seeded on that same bar with the SMA of the last ``fast`` prices
    (not of the first ones); the signal EMA is seeded with the SMA of the first ``signal`` MACD
    values. ``period`` is the slow period."""

    __slots__ = ("_alpha", "_fast", "_recent", "_signal", "_slow", "fast", "signal")
    _fast: float | None

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__(slow)
        self.fast = _period("MACD", "fast", fast)
        self.signal = _period("MACD", "signal", signal)
        if fast >= slow:
            raise ValueError(f"MACD fast ({fast}) must be less than slow ({slow})")
        self._alpha = 2.0 / (fast + 1)
        self._slow = EMA(slow)
        self._signal = EMA(signal)
        self.reset()

    @property
    def lookback(self) -> int:
        return self.period + self.signal - 2

    def update(self, x: float) -> MACDValue | None:
        """Feed one price; return (macd, signal, hist), or None while warming up."""
        x = self._check(x)
        self.count += 1
        slow = self._slow.update(x)
        fast = self._fast
        if fast is not None:
            fast += self._alpha * (x - fast)
        else:
            self._recent.append(x)
            if slow is None:
                return None
            fast = 0.0
            for v in self._recent:  # plain left-to-right sum, as TA-Lib seeds its EMAs
                fast += v
            fast /= self.fast
            self._recent.clear()
        self._fast = fast
        assert slow is not None
        macd = fast - slow
        sig = self._signal.update(macd)
        if sig is not None:
            self._value = MACDValue(macd, sig, macd - sig)
        return self._value

    def reset(self) -> None:
        super().reset()
        self._slow.reset()
        self._signal.reset()
        self._fast = None
        self._recent: deque[float] = deque(maxlen=self.fast)

    def __repr__(self) -> str:
        return f"MACD({self.fast}, {self.period}, {self.signal}, value={self._value!r})"


class Crossover:
    """Detects when series ``a`` crosses series ``b``.

    ``update(a, b)`` returns +1 when ``a > b`` became true (was ``a <= b``), -1 when it became
    false, else 0. The first pair only sets the state, so events strictly alternate.
    """

    __slots__ = ("_above",)

    def __init__(self) -> None:
        self._above: bool | None = None

    def update(self, a: float, b: float) -> int:
        """Feed the latest values of both series; return +1, -1 or 0."""
        above = a > b
        prev, self._above = self._above, above
        if prev == above or prev is None:
            return 0
        return 1 if above else -1

    def reset(self) -> None:
        """Forget the previous state."""
        self._above = None
