"""The built-in strategies on real data: events alternate, match TA-Lib crossings, validate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from multibot.market.bar import Bar, Signal
from strategies import registry
from strategies.base import Strategy, StrategyError
from strategies.bollinger import Bollinger, BollingerParams
from strategies.ema_cross import EmaCross
from strategies.macd_cross import MacdCross
from strategies.rsi_revert import RsiRevert, RsiRevertParams
from strategies.sma_cross import SmaCross
from tests.strategy_support import (
    FLAT,
    LONG,
    load_bars,
    run,
    sma_reference,
)

# --- built-in strategies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cls", "warmup"),
    [
        ("sma_cross", SmaCross, 31),
        ("ema_cross", EmaCross, 27),
        ("ema_cross:fast=5,slow=20", EmaCross, 21),
    ],
)
def test_cross_on_real_btc_alternates_long_and_flat(spec: str, cls: type, warmup: int) -> None:
    bars = load_bars("BTCUSDT")
    strat = registry.create(*registry.parse_spec(spec))
    assert isinstance(strat, cls) and strat.warmup == warmup
    assert all(strat.on_bar(b) is None for b in bars[: warmup - 1])
    signals = run(strat, bars[warmup - 1 :])
    assert LONG in signals and FLAT in signals
    assert all(a is not b for a, b in itertools.pairwise(signals))


def test_sma_cross_events_match_numpy_crossings() -> None:
    bars = load_bars("BTCUSDT")[:5000]
    x = np.array([b.close for b in bars])
    fast, slow = sma_reference(x, 5)[15:], sma_reference(x, 20)
    above = fast > slow
    expected = [LONG if a else FLAT for p, a in itertools.pairwise(above) if a != p]
    ref, params = registry.parse_spec("sma_cross:fast=5,slow=20")
    assert run(registry.create(ref, params), bars) == expected


SYMBOLS_1H = ["ADAUSDT", "BNBUSDT", "BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
DATASETS = [("BTCUSDT", "1m")] + [(s, "1h") for s in SYMBOLS_1H]
NEW_SPECS = [
    ("rsi_revert", RsiRevert, 16),
    ("macd_cross", MacdCross, 35),
    ("bollinger", Bollinger, 21),
    ("rsi_revert:period=7,oversold=25,overbought=75", RsiRevert, 9),
    ("macd_cross:fast=5,slow=35,signal=5", MacdCross, 40),
    ("bollinger:period=50,k=2.5,exit=upper", Bollinger, 51),
]


@pytest.mark.parametrize(("symbol", "interval"), DATASETS)
@pytest.mark.parametrize(("spec", "cls", "warmup"), NEW_SPECS)
def test_new_builtins_on_real_data_alternate(
    spec: str, cls: type, warmup: int, symbol: str, interval: str
) -> None:
    bars = load_bars(symbol, interval)
    strat = registry.create(*registry.parse_spec(spec))
    assert isinstance(strat, cls) and strat.warmup == warmup
    assert all(strat.on_bar(b) is None for b in bars[: warmup - 1])
    signals = run(strat, bars[warmup - 1 :])
    assert signals.count(LONG) >= 3 and signals.count(FLAT) >= 3
    assert all(a is not b for a, b in itertools.pairwise(signals))
    if cls is not MacdCross:  # mean-reversion strategies track their stance: LONG comes first
        assert signals[0] is LONG


def crossings(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """+1 where ``a > b`` became true, -1 where it became false (like Crossover), else 0."""
    above = (a > b).astype(int)
    return np.concatenate([[0], np.diff(above)])


def stance_events(entry: np.ndarray, exit_: np.ndarray) -> list[tuple[int, Signal]]:
    """Reference state machine: enter on an entry bar when flat, leave on an exit bar."""
    out, long = [], False
    for i in np.flatnonzero(entry | exit_):
        if long and exit_[i]:
            out.append((int(i), FLAT))
            long = False
        elif not long and entry[i] and not exit_[i]:
            out.append((int(i), LONG))
            long = True
    return out


def events(strategy: Strategy, bars: tuple[Bar, ...]) -> list[tuple[int, Signal]]:
    return [(i, s) for i, b in enumerate(bars) if (s := strategy.on_bar(b)) is not None]


@pytest.mark.parametrize(("symbol", "interval"), [("BTCUSDT", "1m"), ("XRPUSDT", "1h")])
def test_new_builtins_event_bars_match_talib_references(symbol: str, interval: str) -> None:
    talib = pytest.importorskip("talib")
    bars = load_bars(symbol, interval)
    x = np.array([b.close for b in bars])
    rsi = talib.RSI(x, 14)[14:]  # compared from the first value on, as the strategy sees it
    expected = stance_events(crossings(rsi, 30.0) > 0, crossings(rsi, 70.0) > 0)
    assert events(registry.create("rsi_revert"), bars) == [(i + 14, s) for i, s in expected]
    macd, signal, _ = (v[33:] for v in talib.MACD(x, 12, 26, 9))
    cross = crossings(macd, signal)
    expected = [(int(i) + 33, LONG if cross[i] > 0 else FLAT) for i in np.flatnonzero(cross)]
    assert events(registry.create("macd_cross"), bars) == expected
    for exit_, band in (("middle", 1), ("upper", 0)):
        lines = [v[19:] for v in talib.BBANDS(x, 20, 2.0, 2.0, 0)]
        close = x[19:]
        expected = stance_events(crossings(close, lines[2]) > 0, close >= lines[band])
        got = events(registry.create("bollinger", {"exit": exit_}), bars)
        assert got == [(i + 19, s) for i, s in expected] and len(got) > 100


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rsi_revert", {"period": 1}, "period must be an int >= 2, got 1"),
        ("rsi_revert", {"oversold": 0}, r"oversold must be a number between 0 and 100"),
        ("rsi_revert", {"overbought": 100}, r"overbought must be a number between 0 and 100"),
        ("rsi_revert", {"oversold": 70}, r"oversold \(70.0\) must be less than overbought"),
        ("rsi_revert", {"oversold": "low"}, r"bad value for parameter 'oversold'"),
        ("macd_cross", {"fast": 26}, r"fast \(26\) must be less than slow \(26\)"),
        ("macd_cross", {"slow": 0}, "slow must be an int >= 1, got 0"),
        ("macd_cross", {"signal": 0}, "signal must be an int >= 1, got 0"),
        ("macd_cross", {"signal": 9.5}, r"bad value for parameter 'signal'"),
        ("bollinger", {"period": 1}, "period must be an int >= 2, got 1"),
        ("bollinger", {"k": 0}, "k must be a number > 0, got 0.0"),
        ("bollinger", {"k": -2}, "k must be a number > 0"),
        ("bollinger", {"exit": "lower"}, r"bad value for parameter 'exit'.*'lower'"),
        ("bollinger", {"band": 2}, r"has no parameter 'band'.*period: int = 20, k: float = 2.0"),
    ],
)
def test_new_builtins_reject_bad_parameters(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(StrategyError, match=rf"strategy '{name}'.*{message}"):
        registry.create(name, params)


def test_params_checked_when_built_directly_too() -> None:
    with pytest.raises(StrategyError, match="exit must be 'middle' or 'upper', got 'lower'"):
        Bollinger(BollingerParams(exit="lower"))  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="k must be a number > 0, got True"):
        Bollinger(BollingerParams(k=True))
    with pytest.raises(StrategyError, match="oversold must be a number between 0 and 100"):
        RsiRevert(RsiRevertParams(oversold=math.nan))
    assert Bollinger(BollingerParams(k=3)).bands.k == 3.0


