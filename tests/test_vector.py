"""The backtest's vector path must trade exactly as the bar-by-bar path (and so as live).

strategies.vector's series forms must equal the incremental indicators bit for bit, and an
event-driven run (signals computed at once, only eventful bars stepped) must produce the very
same fills, decisions and positions as feeding every bar to ``on_bar``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import numpy as np
import pytest

from multibot.backtest.engine import SymbolRun, run_symbol
from multibot.backtest.session import Request, prepare, run_backtest
from multibot.market.bundled import load_klines
from strategies import vector
from strategies.base import Strategy
from strategies.indicators import EMA, SMA, Crossover
from strategies.sma_cross import SmaCross
from tests.backtest_support import write_bundled_csv
from worker.runner import MAX_STRATEGY_ERRORS


def incremental(indicator: SMA | EMA, values: np.ndarray) -> np.ndarray:
    out = [indicator.update(float(x)) for x in values]
    return np.array([np.nan if v is None else v for v in out])


def series_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(100, 1, 3000),
        np.full(200, 0.5123),  # a flat market: fast == slow exactly, a tie both must see
        rng.uniform(1e-4, 7e4, 2000),  # many binades: the exact Python-integer path
        np.round(rng.uniform(0.3, 0.6, 2000), 4),
        np.concatenate([np.zeros(40), rng.uniform(0, 1, 100)]),
        -rng.uniform(1, 2, 300),
        np.array([1.0, 2.0]),  # shorter than most periods
        load_klines("XRPUSDT", "1m")["close"][:5000],
        load_klines("BTCUSDT", "1h")["close"],
    ]


@pytest.mark.parametrize("period", [1, 2, 10, 30, 200])
def test_series_forms_equal_the_incremental_indicators_bit_for_bit(period: int) -> None:
    for values in series_cases():
        for cls in (SMA, EMA):
            expected = incremental(cls(period), values)
            got = cls.series(values, period)
            assert np.array_equal(got, expected, equal_nan=True), (cls.__name__, period)


def test_crossover_events_equal_the_incremental_crossover() -> None:
    for values in series_cases():
        fast, slow = SMA.series(values, 3), EMA.series(values, 8)
        cross = Crossover()
        expected = [0 if np.isnan(a) or np.isnan(b) else cross.update(a, b)
                    for a, b in zip(fast.tolist(), slow.tolist(), strict=True)]
        assert vector.crossover_events(fast, slow).tolist() == expected


def test_a_non_finite_input_is_refused_as_by_update() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        SMA.series(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ValueError, match="non-finite"):
        SMA(2).update(float("inf"))


def runs(spec: list[str], symbol: str = "BTCUSDT", order_type: str = "MARKET",
         interval: str = "1m", bars: int = 12_000) -> tuple[SymbolRun, SymbolRun]:
    request = Request(symbols=[symbol], strategies=spec, interval=interval,
                      order_type=order_type, isolate=False)
    job = prepare(request).jobs[0]
    short = dataclasses.replace(job, bars=job.bars[:bars])
    return run_symbol(short), run_symbol(short, bar_by_bar=True)


def same(a: SymbolRun, b: SymbolRun) -> None:
    assert a.fills, "the comparison needs trades"
    left = {k: v for k, v in vars(a).items() if k != "seconds"}
    right = {k: v for k, v in vars(b).items() if k != "seconds"}
    assert msgspec.to_builtins(left) == msgspec.to_builtins(right)


@pytest.mark.parametrize(("spec", "symbol", "order_type"), [
    (["sma_cross:fast=10,slow=30"], "BTCUSDT", "MARKET"),
    (["sma_cross:fast=3,slow=5"], "XRPUSDT", "MARKET"),
    (["ema_cross:fast=12,slow=26"], "ETHUSDT", "MARKET"),
    # LIMIT orders rest: every bar they rest on must go through the broker, as bar by bar
    (["sma_cross:fast=10,slow=30"], "SOLUSDT", "LIMIT"),
    # two strategies voting: the combiner sees both codes of a bar in order
    (["sma_cross:fast=5,slow=20", "ema_cross:fast=8,slow=21"], "BTCUSDT", "MARKET"),
])
def test_the_event_driven_run_equals_the_bar_by_bar_run(spec: list[str], symbol: str,
                                                         order_type: str) -> None:
    same(*runs(spec, symbol, order_type))


def test_resting_limit_orders_are_stepped_bar_by_bar_until_they_fill(tmp_path: Path) -> None:
    # closes with more decimals than the tick: a LIMIT at the rounded close rests a while
    rng = np.random.default_rng(3)
    closes = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.003, 3000))), 6).tolist()
    data = write_bundled_csv(tmp_path / "k.csv", closes)
    request = Request(symbols=["NEWCOINUSDT"], data=[data], order_type="LIMIT",
                      strategies=["sma_cross:fast=5,slow=20"], isolate=False)
    job = prepare(request).jobs[0]
    event, reference = run_symbol(job), run_symbol(job, bar_by_bar=True)
    first = int(job.bars["open_time"][0])
    decided_on = {(d.bar_time - first) // job.step_ms for d in event.decisions}
    rested = [f for f in event.fills if f.bar not in decided_on]  # filled on a later bar
    assert rested, "no order rested: the case does not test what it should"
    same(event, reference)


def test_a_strategy_without_a_series_form_runs_bar_by_bar_alongside() -> None:
    event, reference = runs(["sma_cross:fast=10,slow=30", "rsi_revert"])
    same(event, reference)


class FailingFills(SmaCross):
    """on_fill raises every time: disabled after MAX_STRATEGY_ERRORS, then asked nothing."""

    name = "test_failing_fills"

    def on_fill(self, side: str, qty: float, price: float) -> None:
        raise RuntimeError("fill bug")


def test_a_disabled_strategy_stops_trading_on_both_paths() -> None:
    """Its series-form signals must be ignored too, as on_bar is no longer asked: a strategy
    that failed MAX_STRATEGY_ERRORS times is flat and silent, in a backtest as live."""
    event, reference = runs(["tests.test_vector:FailingFills"])
    assert event.strategy_errors == MAX_STRATEGY_ERRORS
    assert "disabled" in event.last_error
    assert len(event.fills) == MAX_STRATEGY_ERRORS  # the fills that raised, then nothing
    same(event, reference)


class BrokenSeries(SmaCross):
    """signals() that raises: the run must fall back to on_bar, say so, and lose nothing."""

    name = "test_broken_series"

    def signals(self, bars: vector.BarColumns) -> vector.Events:
        raise RuntimeError("vector bug")


class WrongShape(SmaCross):
    name = "test_wrong_shape"

    def signals(self, bars: vector.BarColumns) -> vector.Events:
        return np.zeros(3, dtype=np.int8)


@pytest.mark.parametrize(("cls", "said"), [(BrokenSeries, "raised RuntimeError: vector bug"),
                                           (WrongShape, "shape (3,)")])
def test_a_faulty_series_form_falls_back_to_bar_by_bar(cls: type[Strategy], said: str) -> None:
    fallback, _ = runs([f"tests.test_vector:{cls.__name__}"])
    reference, _ = runs(["sma_cross"])
    assert fallback.fills == reference.fills and fallback.decisions == reference.decisions
    assert any(said in w and "bar by bar" in w for w in fallback.warnings), fallback.warnings


class PeekingSeries(SmaCross):
    """A vectorised signals() with the classic bug: it trades on the next bar's close."""

    name = "test_peeking_series"

    def signals(self, bars: vector.BarColumns) -> vector.Events:
        ahead = np.append(bars.close[1:], bars.close[-1])
        rising = (ahead > bars.close).astype(np.int8)
        return np.where(rising == 1, 1, -1).astype(np.int8)


def test_the_lookahead_check_catches_a_series_form_that_peeks() -> None:
    request = Request(symbols=["BTCUSDT"], strategies=["tests.test_vector:PeekingSeries"],
                      interval="1h", check_lookahead=True, isolate=False)
    result = run_backtest(request)
    assert result.outcomes[0].metrics.return_pct > 50  # what trading on tomorrow looks like
    assert result.leaks and "used bars after" in result.report["lookahead_check"]["problems"][0]


def test_corrupt_bars_send_the_run_bar_by_bar_and_change_nothing() -> None:
    request = Request(symbols=["BTCUSDT"], strategies=["sma_cross:fast=3,slow=5"],
                      interval="1m", isolate=False)
    job = prepare(request).jobs[0]
    bars = job.bars[:5000].copy()
    bars["low"][::7] = 0.0  # the broker ignores such bars (no price, no fill): so must we
    bars["high"][3::11] = np.inf
    job = dataclasses.replace(job, bars=bars)
    same(run_symbol(job), run_symbol(job, bar_by_bar=True))
