"""Whole-series forms of the incremental indicators, bit-for-bit equal to feeding ``update``.

A backtest knows the whole series up front. For a strategy whose signals depend on the bars
alone, computing them here (numpy) and asking the runner only on the bars where something
happens is many times faster than one Python ``on_bar`` per bar, and it trades identically:
every function returns exactly the floats the incremental indicator returns, bar by bar (NaN
where it returns None), and tests/test_vector.py checks that on random and real data.

numpy is imported here, so this module is imported only where a backtest runs, never by a
worker (workers stay small; see strategies.indicators for the live forms).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["BarColumns", "crossover_events", "ema", "sma"]

Floats = npt.NDArray[np.float64]
Events = npt.NDArray[np.int8]

# the signed 64-bit headroom of an exact window sum: 53-bit mantissas, shifted onto a common
# exponent, summed over the window
_INT_BITS = 62


class BarColumns(NamedTuple):
    """A series of closed bars as columns (what ``Strategy.signals`` is given)."""

    open_time: npt.NDArray[np.int64]
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats


def _finite(values: Floats, owner: str) -> Floats:
    x = np.ascontiguousarray(values, dtype=np.float64)
    if not np.isfinite(x).all():  # the incremental forms raise on the first one as well
        raise ValueError(f"{owner} got a non-finite input")
    return x


def _window_sums(x: Floats, period: int) -> Floats:
    """Every ``period``-long window sum of ``x``, correctly rounded (as ``math.fsum`` gives).

    Exact integer arithmetic: each float is an integer mantissa times a power of two, so on
    a common exponent the window sums are integer differences of a cumulative sum. In int64
    when the values span few enough binades (prices of one symbol usually do; int64 wraps in
    the cumulative sum but every difference of two of its entries is exact), else in Python
    integers. The integer-to-float conversion rounds to nearest even, as fsum does.
    """
    mantissa, exponent = np.frexp(x)
    ints = (mantissa * 2.0**53).astype(np.int64)
    exponent = exponent.astype(np.int64) - 53
    nonzero = ints != 0
    if not nonzero.any():
        return np.zeros(len(x) - period + 1)
    base = int(exponent[nonzero].min())
    shift = np.where(nonzero, exponent - base, 0)
    if int(shift.max()) + 53 + period.bit_length() <= _INT_BITS:
        scaled = ints << shift
        total = np.concatenate(([0], np.cumsum(scaled)))
        sums = (total[period:] - total[:-period]).astype(np.float64)
    else:
        exact = [int(m) << int(s) for m, s in zip(ints.tolist(), shift.tolist(), strict=True)]
        total_obj = np.concatenate(([0], np.cumsum(np.array(exact, dtype=object))))
        sums = np.array([float(v) for v in total_obj[period:] - total_obj[:-period]])
    return np.ldexp(sums, base)


def sma(values: Floats, period: int) -> Floats:
    """``SMA(period).update`` over ``values``: the window mean, NaN before the first window."""
    x = _finite(values, f"SMA({period})")
    out = np.full(len(x), np.nan)
    if len(x) >= period:
        out[period - 1 :] = _window_sums(x, period) / period
    return out


def ema(values: Floats, period: int) -> Floats:
    """``EMA(period).update`` over ``values`` (a recurrence: the same arithmetic, in order)."""
    x = _finite(values, f"EMA({period})").tolist()
    out = [math.nan] * len(x)
    if len(x) >= period:
        seed = 0.0
        for value in x[:period]:
            seed += value
        value = seed / period
        alpha = 2.0 / (period + 1)
        out[period - 1] = value
        for i in range(period, len(x)):
            value = value + alpha * (x[i] - value)
            out[i] = value
    return np.array(out)


def crossover_events(a: Floats, b: Floats) -> Events:
    """``Crossover.update(a, b)`` over the bars where both are defined (0 elsewhere).

    +1 where ``a > b`` became true, -1 where it became false; the first defined pair only
    sets the state. As signal codes (``Strategy.signals``): +1 LONG, -1 FLAT, 0 no opinion.
    """
    defined = ~(np.isnan(a) | np.isnan(b))
    events = np.zeros(len(a), dtype=np.int8)
    where = np.flatnonzero(defined)
    if len(where) > 1:
        above = (a[where] > b[where]).astype(np.int8)
        events[where[1:]] = np.diff(above)
    return events

