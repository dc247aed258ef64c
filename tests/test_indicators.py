"""Incremental indicators against TA-Lib on the bundled real 1m klines (40,000 bars each).

Tolerances (asserted; achieved in brackets, over all four symbols):
  SMA       rtol 1e-12  [<= 2e-14: TA-Lib's running sum is plain, ours compensated]
  EMA       rtol 1e-12  [<= 2.3e-16]
  RSI       rtol 1e-12  [<= 2.1e-15]
  MACD      atol 1e-14 * max price  [<= 3e-16 * price]. Its lines are differences of two
            price-sized EMAs, so error is measured against the price: relative to the line
            itself it reaches 8e-9 only where the line crosses zero.
  BBANDS    rtol 1e-12 on all three bands  [<= 1e-13]. Our std vs an exact two-pass std:
            rtol 1e-12 or atol 1e-15 * max price  [<= 3e-14 relative, or <= 1e-16 * price for
            near-flat windows; exactly 0 for flat ones]. TA-Lib's own std is 2e-12 .. 1e-7 off.
  ATR       rtol 1e-12  [<= 1.9e-15]
TA-Lib's unstable periods are all 0 (asserted), so RSI, EMA and ATR need no settling window:
they are compared from their very first value, which must sit at TA-Lib's first non-NaN index.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies.indicators import EMA, MACD, RSI, SMA
from strategies.volatility import ATR, BollingerBands

talib = pytest.importorskip("talib")

KLINES = Path(__file__).resolve().parents[1] / "multibot" / "market" / "data" / "klines"
SYMBOLS = ["BTCUSDT", "XRPUSDT", "ETHUSDT", "SOLUSDT"]


@cache
def hlc(symbol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High, low and close columns of the bundled 1m klines."""
    with gzip.open(KLINES / f"{symbol}-1m.csv.gz", "rt", newline="") as fh:
        rows = [(r["high"], r["low"], r["close"]) for r in csv.DictReader(fh)]
    high, low, close = np.array(rows, dtype=float).T
    assert len(close) == 40_000
    return high, low, close


def feed(update: Callable[..., Any], *cols: np.ndarray) -> list[Any]:
    return [update(*vals) for vals in zip(*(c.tolist() for c in cols), strict=True)]


def check_alignment(out: Sequence[object], want: np.ndarray, lookback: int) -> None:
    """None exactly up to TA-Lib's first non-NaN index, a value everywhere after."""
    first_nan_free = int(np.argmax(~np.isnan(want)))
    assert lookback == first_nan_free
    assert all(v is None for v in out[:lookback])
    assert all(v is not None for v in out[lookback:])


def test_talib_defaults_need_no_settling_window() -> None:
    for name in ("RSI", "EMA", "ATR"):  # MACD uses EMA's
        assert talib.get_unstable_period(name) == 0
    assert talib.get_compatibility() == 0  # default (not Metastock) seeding


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("period", [2, 20, 200])
def test_sma_and_ema_match_talib(symbol: str, period: int) -> None:
    close = hlc(symbol)[2]
    for ind, ref in ((SMA(period), talib.SMA), (EMA(period), talib.EMA)):
        want = ref(close, period)
        got = feed(ind.update, close)
        check_alignment(got, want, ind.lookback)
        np.testing.assert_allclose(got[ind.lookback :], want[ind.lookback :], rtol=1e-12, atol=0)


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("period", [2, 14, 50])
def test_rsi_matches_talib(symbol: str, period: int) -> None:
    close = hlc(symbol)[2]
    rsi = RSI(period)
    got, want = feed(rsi.update, close), talib.RSI(close, period)
    check_alignment(got, want, rsi.lookback)
    assert rsi.lookback == period
    np.testing.assert_allclose(got[period:], want[period:], rtol=1e-12, atol=0)


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("periods", [(12, 26, 9), (5, 35, 5), (3, 10, 16)])
def test_macd_matches_talib(symbol: str, periods: tuple[int, int, int]) -> None:
    close = hlc(symbol)[2]
    macd = MACD(*periods)
    got, want = feed(macd.update, close), talib.MACD(close, *periods)
    check_alignment(got, want[0], macd.lookback)
    assert macd.lookback == periods[1] + periods[2] - 2
    lines = np.array(got[macd.lookback :])
    atol = 1e-14 * float(close.max())
    for i, name in enumerate(("macd", "signal", "hist")):
        assert getattr(got[-1], name) == got[-1][i]
        np.testing.assert_allclose(lines[:, i], want[i][macd.lookback :], rtol=0, atol=atol)


def test_macd_fast_ema_is_seeded_where_the_slow_one_starts() -> None:
    """TA-Lib's alignment: on bar ``slow`` both EMAs start from SMAs of the latest prices."""
    x = hlc("XRPUSDT")[2][:40]
    macd = MACD(3, 10, 4)
    feed(macd.update, x[:10])
    assert macd._fast == pytest.approx(float(np.mean(x[7:10])), rel=1e-15)
    assert macd._slow.value == pytest.approx(float(np.mean(x[:10])), rel=1e-15)


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize(("period", "k"), [(20, 2.0), (5, 1.5), (100, 3.0)])
def test_bbands_match_talib_and_exact_std(symbol: str, period: int, k: float) -> None:
    close = hlc(symbol)[2]
    bb = BollingerBands(period, k)
    got, stds = [], []
    for x in close.tolist():
        got.append(bb.update(x))
        stds.append(bb.std)
    want = talib.BBANDS(close, period, k, k, 0)  # matype 0 = SMA
    check_alignment(got, want[0], bb.lookback)
    bands = np.array(got[bb.lookback :])
    for i in range(3):
        np.testing.assert_allclose(bands[:, i], want[i][bb.lookback :], rtol=1e-12, atol=0)
    # Reference: corrected two-pass std (mean-rounding term removed), vectorised.
    dev = np.lib.stride_tricks.sliding_window_view(close, period)
    dev = dev - dev.mean(axis=1, keepdims=True)
    exact = np.sqrt(np.maximum((dev * dev).mean(axis=1) - dev.mean(axis=1) ** 2, 0.0))
    ours = np.array(stds[bb.lookback :])
    np.testing.assert_allclose(ours, exact, rtol=1e-12, atol=1e-15 * float(close.max()))
    assert np.all(ours[exact == 0.0] == 0.0)  # a flat window has a std of exactly 0


def exact_std(window: Sequence[float]) -> float:
    """Population std in exact rational arithmetic, rounded once at the end."""
    vals = [Fraction(v) for v in window]
    mean = sum(vals, Fraction(0)) / len(vals)
    return math.sqrt(sum(((v - mean) ** 2 for v in vals), Fraction(0)) / len(vals))


def test_bollinger_variance_does_not_drift_across_regimes() -> None:
    """165,000 closes spanning 2 .. 1e9 (real BTC, a 1e9 spike, real XRP, ETH, SOL): the std
    is exact right after every jump and long after it, where x / x**2 running sums are not."""
    rng = np.random.default_rng(7)
    parts = [hlc("BTCUSDT")[2], 1e9 + rng.normal(0, 1e-3, 5_000)]
    parts += [hlc(s)[2] for s in SYMBOLS[1:]]
    xs = np.concatenate(parts).tolist()
    period = 20
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    checks = set(range(period, len(xs), 997)) | {b + j for b in starts for j in range(60)}
    bb = BollingerBands(period)
    s1 = s2 = naive_worst = ours_worst = 0.0
    for i, x in enumerate(xs):
        bb.update(x)
        s1 += x
        s2 += x * x
        if i >= period:
            old = xs[i - period]
            s1 -= old
            s2 -= old * old
        if i >= period and i in checks:
            want = exact_std(xs[i + 1 - period : i + 1])
            assert bb.std is not None
            ours_worst = max(ours_worst, abs(bb.std - want) / want)
            naive = math.sqrt(max(s2 / period - (s1 / period) ** 2, 0.0))
            naive_worst = max(naive_worst, abs(naive - want) / want)
    assert bb.count == len(xs) == 165_000
    assert ours_worst < 1e-13
    assert naive_worst > 1e-3  # the same check catches the naive algorithm


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("period", [1, 14, 50])
def test_atr_matches_talib(symbol: str, period: int) -> None:
    high, low, close = hlc(symbol)
    atr = ATR(period)
    got, want = feed(atr.update, high, low, close), talib.ATR(high, low, close, period)
    check_alignment(got, want, atr.lookback)
    assert atr.lookback == period
    np.testing.assert_allclose(got[period:], want[period:], rtol=1e-12, atol=0)


# --- edge cases and contracts --------------------------------------------------------------


def test_rsi_of_a_flat_market_is_neutral_50_where_talib_says_0() -> None:
    flat = np.full(30, 2.5)
    assert talib.RSI(flat, 14)[-1] == 0.0  # documented deviation
    rsi = RSI(14)
    assert feed(rsi.update, flat)[-1] == 50.0
    assert rsi.update(2.6) == 100.0
    assert 0.0 < (rsi.update(2.5) or 0.0) < 100.0


def test_tiny_prices_are_scale_invariant() -> None:
    """Sub-cent coins: indicators of x * 1e-9 are those of x, scaled (no absolute epsilons)."""
    close = hlc("XRPUSDT")[2][:3000]
    tiny = close * 1e-9
    for make, scale in ((lambda: RSI(14), 1.0), (lambda: BollingerBands(20), 1e-9)):
        a, b = make(), make()
        feed(a.update, close)
        feed(b.update, tiny)
        assert np.allclose(np.array(b.value) / scale, np.array(a.value), rtol=1e-9, atol=0)
    rsi_tiny = np.array(feed(RSI(14).update, tiny)[14:])
    np.testing.assert_allclose(rsi_tiny, talib.RSI(tiny, 14)[14:], rtol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SMA(5),
        lambda: EMA(5),
        lambda: RSI(5),
        lambda: MACD(3, 6, 2),
        lambda: BollingerBands(5),
        lambda: ATR(5),
    ],
    ids=["SMA", "EMA", "RSI", "MACD", "BBANDS", "ATR"],
)
def test_reset_replays_identically_and_non_finite_input_raises(make: Callable[[], Any]) -> None:
    high, low, close = (c[:300] for c in hlc("BTCUSDT"))
    ind = make()
    cols = (high, low, close) if isinstance(ind, ATR) else (close,)
    first = feed(ind.update, *cols)
    assert ind.ready and ind.value == first[-1] and ind.count == 300
    assert repr(ind).startswith(type(ind).__name__)
    ind.reset()
    assert not ind.ready and ind.value is None and ind.count == 0
    assert feed(ind.update, *cols) == first
    bad = (math.nan, 1.0, 1.0) if isinstance(ind, ATR) else (math.inf,)
    with pytest.raises(ValueError, match="non-finite"):
        ind.update(*bad)


def test_bad_parameters_and_bars_raise() -> None:
    bads: list[Any] = [0, -1, 2.5, True]
    for bad in bads:
        with pytest.raises(ValueError, match="period must be an int >= 1"):
            RSI(bad)
        with pytest.raises(ValueError, match="period must be an int >= 1"):
            ATR(bad)
    with pytest.raises(ValueError, match="MACD fast must be an int >= 1"):
        MACD(0, 26, 9)
    with pytest.raises(ValueError, match="MACD signal must be an int >= 1"):
        MACD(12, 26, 0)
    with pytest.raises(ValueError, match=r"MACD fast \(26\) must be less than slow \(26\)"):
        MACD(26, 26, 9)
    for k in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="k must be a finite number > 0"):
            BollingerBands(20, k)
    with pytest.raises(ValueError, match=r"low 2\.0 above high 1\.0"):
        ATR(3).update(1.0, 2.0, 1.5)


PRICES = st.lists(st.floats(1e-6, 1e6, allow_nan=False), min_size=1, max_size=120)


@given(PRICES, st.integers(1, 30))
def test_property_rsi_bounded_and_bbands_std_exact(xs: list[float], period: int) -> None:
    rsi, bb = RSI(period), BollingerBands(period)
    for i, x in enumerate(xs):
        r = rsi.update(x)
        assert (r is None) == (i < period)
        assert r is None or 0.0 <= r <= 100.0
        bands = bb.update(x)
        assert (bands is None) == (i < period - 1)
        if bands is not None:
            assert bb.std is not None and bands.lower <= bands.middle <= bands.upper
            want = exact_std(xs[i + 1 - period : i + 1])
            assert bb.std == pytest.approx(want, rel=1e-9, abs=1e-12 * max(xs))
