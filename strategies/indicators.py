"""Incremental indicators: O(1) work per update, plain float state, no per-bar allocation.

Every indicator has ``update(x) -> float | None`` (None until ready), ``value``, ``ready``,
``count`` and ``reset()``. Indicators with several outputs (MACD, Bollinger bands) keep their
main line in ``value`` and expose the others as attributes; ones fed by a whole bar (ATR) add
an ``update_bar``-style method next to ``update``. Non-finite inputs raise ValueError, so one bad
tick can never poison the state silently.
"""

from __future__ import annotations

import abc
import math

__all__ = ["EMA", "SMA", "Crossover", "Indicator"]


class Indicator(abc.ABC):
    """Base of the incremental indicators."""

    __slots__ = ("_value", "count", "period")

    def __init__(self, period: int) -> None:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"{type(self).__name__} period must be an int >= 1, got {period!r}")
        self.period = period
        self.count = 0
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        """Latest value, or None while warming up."""
        return self._value

    @property
    def ready(self) -> bool:
        """True once ``value`` is defined."""
        return self._value is not None

    @abc.abstractmethod
    def update(self, x: float) -> float | None:
        """Feed one value; return the new indicator value, or None while not ready."""

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


class SMA(Indicator):
    """Simple moving average over a ring buffer with a compensated (Neumaier) running sum."""

    __slots__ = ("_buf", "_comp", "_pos", "_sum")

    def __init__(self, period: int) -> None:
        super().__init__(period)
        self._buf = [0.0] * period
        self._pos = 0
        self._sum = 0.0
        self._comp = 0.0

    def _add(self, x: float) -> None:
        s = self._sum
        t = s + x
        if abs(s) >= abs(x):
            self._comp += (s - t) + x
        else:
            self._comp += (x - t) + s
        self._sum = t

    def update(self, x: float) -> float | None:
        x = self._check(x)
        pos = self._pos
        if self.count >= self.period:
            self._add(-self._buf[pos])
        self._buf[pos] = x
        self._add(x)
        self._pos = pos + 1 if pos + 1 < self.period else 0
        self.count += 1
        if self.count >= self.period:
            self._value = (self._sum + self._comp) / self.period
        return self._value

    def reset(self) -> None:
        super().reset()
        self._buf = [0.0] * self.period
        self._pos = 0
        self._sum = 0.0
        self._comp = 0.0


class EMA(Indicator):
    """Exponential moving average, alpha = 2 / (period + 1), seeded with the SMA of the first
    ``period`` values (as TA-Lib does)."""

    __slots__ = ("_seed", "alpha")

    def __init__(self, period: int) -> None:
        super().__init__(period)
        self.alpha = 2.0 / (period + 1)
        self._seed = 0.0

    def update(self, x: float) -> float | None:
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
        if prev is None or prev == above:
            return 0
        return 1 if above else -1

    def reset(self) -> None:
        """Forget the previous state."""
        self._above = None
