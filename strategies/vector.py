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
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["BarColumns", "crossover_events", "ema", "sma", "smas"]

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


class _Prefix(NamedTuple):
    """Exact cumulative sums of a series on a common exponent: x[i] = m[i] * 2**base."""

    total: npt.NDArray[np.int64] | npt.NDArray[np.object_]  # total[k] = m[0] + ... + m[k-1]
    base: int
    top_bit: int  # |m[i]| < 2**top_bit


def _prefix(x: Floats, exact_ints: bool = False) -> _Prefix:
    """Each float is an integer mantissa times a power of two (read from its bits); shifted
    onto the smallest exponent, the values are integers whose cumulative sum gives every
    window sum exactly. int64 when that fits; it wraps, but a difference of two of its
    entries is exact as long as the window sum itself fits, which ``_window_sums`` checks.
    In-place operations and masks instead of indexed copies: each 8-byte temporary of a
    series costs a fresh backtest process a page fault per 512 bars."""
    bits = x.view(np.int64)
    exponent = bits >> 52
    exponent &= 0x7FF
    mantissa = bits & 0xFFFFFFFFFFFFF
    normal = exponent != 0
    np.bitwise_or(mantissa, 1 << 52, out=mantissa, where=normal)  # the implicit bit
    exponent -= 1075  # bias and mantissa width; a subnormal's exponent is that of 1
    np.copyto(exponent, -1074, where=~normal)
    np.negative(mantissa, out=mantissa, where=bits < 0)
    nonzero = mantissa != 0
    base = int(exponent.min(where=nonzero, initial=2**62)) if nonzero.any() else 0
    exponent -= base
    np.copyto(exponent, 0, where=~nonzero)
    top_bit = int(exponent.max()) + 53
    total: npt.NDArray[np.int64] | npt.NDArray[np.object_]
    if top_bit < _INT_BITS and not exact_ints:
        np.left_shift(mantissa, exponent, out=mantissa)
        total = np.empty(len(x) + 1, dtype=np.int64)
        total[0] = 0
        np.cumsum(mantissa, out=total[1:])
    else:  # values many binades apart: Python integers, exact at any size
        exact = [m << e for m, e in zip(mantissa.tolist(), exponent.tolist(), strict=True)]
        total = np.concatenate(([0], np.cumsum(np.array(exact, dtype=object))))
    return _Prefix(total, base, top_bit)


def _window_sums(x: Floats, prefix: _Prefix, period: int, out: Floats) -> None:
    """Every ``period``-long window sum of ``x`` (whose ``prefix`` it is), correctly rounded
    (as ``math.fsum`` gives), into ``out``. The integer-to-float conversion rounds to nearest
    even, as fsum does."""
    total, base, top_bit = prefix
    if total.dtype == np.int64 and top_bit + period.bit_length() > _INT_BITS:
        total, base, top_bit = _prefix(x, exact_ints=True)  # these windows overflow int64
    if total.dtype == np.int64:
        # the int64 difference, converted into out chunk by chunk (no temporary series)
        np.subtract(total[period:], total[:-period], out=out, casting="unsafe")
    else:
        out[:] = [float(v) for v in total[period:] - total[:-period]]
    np.ldexp(out, base, out=out)


def smas(values: Floats, periods: Sequence[int]) -> list[Floats]:
    """``sma`` for each of ``periods``, from one exact prefix sum of ``values``."""
    x = _finite(values, f"SMA({', '.join(map(str, periods))})")
    prefix = _prefix(x) if any(len(x) >= period for period in periods) else None
    out = []
    for period in periods:
        means = np.full(len(x), np.nan)
        if prefix is not None and len(x) >= period:
            window = means[period - 1 :]
            _window_sums(x, prefix, period, window)
            window /= period
        out.append(means)
    return out


def sma(values: Floats, period: int) -> Floats:
    """``SMA(period).update`` over ``values``: the window mean, NaN before the first window."""
    return smas(values, (period,))[0]


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
    first = int(defined.argmax()) if defined.any() else len(a)
    if defined[first:].all():  # the usual shape (averages: undefined, then defined): views
        above = (a[first:] > b[first:]).view(np.int8)
        np.subtract(above[1:], above[:-1], out=events[first + 1:])
        return events
    where = np.flatnonzero(defined)
    if len(where) > 1:
        above = (a[where] > b[where]).astype(np.int8)
        events[where[1:]] = np.diff(above)
    return events
