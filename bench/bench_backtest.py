"""Backtest throughput: multibot vs backtesting.py, same data, same SMA cross, same trades.

    python -m bench.bench_backtest [--runs 5] [--no-multi] [--profile]

Data: the bundled BTCUSDT 1m klines (40,000 bars). Strategy: SMA(10) / SMA(30) cross, long
on the cross up, flat on the cross down, all in, fills at the signal bar's close
(backtesting.py: trade_on_close=True), 0.1% commission. Both sides must make the same number
of (closed) trades, else MISMATCH and exit status 1. Timings are wall clock, the median of
--runs interleaved runs, with min-max spread; each side's time includes its own setup and
statistics (multibot: options -> report dict; backtesting.py: Backtest(...) + run()).

multibot rows:
- in-process: the engine in this process (no isolation), i.e. the raw engine speed;
- process per symbol: what `multibot backtest` does (a fresh child of multiprocessing's
  forkserver per symbol; the forkserver, and the spare children a run leaves ready for the
  next, started once by a first run);
- engine loop, event-driven / bar by bar: the engine's loop alone (no metrics or report) on
  each of its two paths: strategies' vector signals and only eventful bars stepped (what
  sma_cross gets), and one on_bar per bar (any strategy; the reference the other must equal).
The multi-symbol row runs the four bundled 1m symbols: multibot spreads them over every core,
backtesting.py (single-symbol by design) runs them one after the other.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOL = "BTCUSDT"
MULTI = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
FAST, SLOW = 10, 30

# pandas and backtesting.py (and argparse, statistics, cProfile) are imported where they are
# used, not here: `--help` and the smoke run in the tests stay fast.


def bt_strategy() -> type:
    """backtesting.py's SMA cross, equivalent to multibot's sma_cross: the same SMA values
    (strategies.indicators.SMA.series: numpy, as fast as pandas' rolling mean, and bit-equal
    to multibot's), the same crossing rule (an event when fast > slow changes, the first
    defined pair only sets the state), long on the cross up, flat on the cross down."""
    import numpy as np
    from backtesting import Strategy

    from strategies.indicators import SMA

    def sma(values: Any, n: int) -> Any:
        return SMA.series(np.asarray(values, dtype=float), n)  # numpy, as fast as rolling()

    class SmaCrossBT(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.f = self.I(sma, self.data.Close, FAST)
            self.s = self.I(sma, self.data.Close, SLOW)
            self.above: bool | None = None

        def next(self) -> None:
            if self.above is None:  # backtesting.py starts a bar after both are defined
                self.above = bool(self.f[-2] > self.s[-2])
            above = bool(self.f[-1] > self.s[-1])
            if above != self.above:
                if above and not self.position:
                    self.buy()
                elif not above:
                    self.position.close()
            self.above = above

    return SmaCrossBT


def frame(symbol: str) -> Any:
    import pandas as pd

    from multibot.market.bundled import load_klines

    k = load_klines(symbol, "1m")
    return pd.DataFrame(
        {"Open": k["open"], "High": k["high"], "Low": k["low"], "Close": k["close"],
         "Volume": k["volume"]},
        index=pd.to_datetime(k["open_time"], unit="ms"))


def run_bt(frames: list[Any], strategy: type) -> int:
    from backtesting import Backtest

    trades = 0
    for df in frames:
        bt = Backtest(df, strategy, cash=1e9, commission=0.001, trade_on_close=True)
        trades += int(bt.run()["# Trades"])
    return trades


def run_ours(symbols: tuple[str, ...], isolate: bool) -> int:
    from multibot.backtest.session import Request, run_backtest

    request = Request(symbols=list(symbols), strategies=[f"sma_cross:fast={FAST},slow={SLOW}"],
                      interval="1m", isolate=isolate)
    return run_backtest(request).combined.trades


def engine_loop(bar_by_bar: bool) -> Callable[[], int]:
    """The engine's loop alone on the prepared BTCUSDT job (no metrics, no report), either
    path: what the event-driven path (strategies.vector) saves over on_bar per bar."""
    from multibot.backtest.engine import run_symbol
    from multibot.backtest.session import Request, prepare

    request = Request(symbols=[SYMBOL], strategies=[f"sma_cross:fast={FAST},slow={SLOW}"],
                      interval="1m", isolate=False)
    job = prepare(request).jobs[0]
    return lambda: len(run_symbol(job, bar_by_bar=bar_by_bar).fills) // 2


def measure(runs: int, sides: dict[str, Callable[[], int]]) -> dict[str, tuple[list[float], int]]:
    """Interleaved: run 1 of every side, then run 2 of every side, ... (fair under noise)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    trades: dict[str, int] = {}
    for _ in range(runs):
        for name, side in sides.items():
            started = time.perf_counter()
            trades[name] = side()
            times[name].append(time.perf_counter() - started)
    return {name: (times[name], trades[name]) for name in sides}


def report(title: str, bars: int, results: dict[str, tuple[list[float], int]]) -> bool:
    import statistics

    print(f"\n{title}: {bars:,} bars")
    print(f"{'engine':<34}{'median bars/s':>15}{'spread (min-max)':>24}{'median s':>10}"
          f"{'trades':>8}")
    for name, (seconds, trades) in results.items():
        rates = sorted(bars / s for s in seconds)
        print(f"{name:<34}{statistics.median(rates):>15,.0f}"
              f"{f'{rates[0]:,.0f}-{rates[-1]:,.0f}':>24}{statistics.median(seconds):>10.3f}"
              f"{trades:>8}")
    reference = statistics.median(next(v[0] for k, v in results.items()
                                       if k.startswith("backtesting.py")))
    for name, (seconds, _) in results.items():
        if name.startswith("multibot"):
            print(f"  {name}: {reference / statistics.median(seconds):.2f}x backtesting.py")
    counts = {trades for _, trades in results.values()}
    if len(counts) != 1:
        print(f"  !!! MISMATCH: trade counts differ: "
              f"{ {name: t for name, (_, t) in results.items()} } !!!")
        return False
    print(f"  trades: equal ({counts.pop()})")
    return True


def main() -> int:
    import argparse
    import cProfile
    import pstats

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-multi", action="store_true", help="skip the 4-symbol row")
    parser.add_argument("--profile", action="store_true",
                        help="also print where multibot's in-process time goes")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from backtesting import __version__ as bt_version

    bt_name = f"backtesting.py {bt_version}"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {bt_name}; SMA "
          f"{FAST}/{SLOW} cross, long/flat, fee 0.1%, fills at the signal bar's close")
    frames = {s: frame(s) for s in MULTI}
    strategy = bt_strategy()
    run_ours((SYMBOL,), isolate=True)  # start the forkserver and the spares once
    ok = report(f"{SYMBOL} 1m", len(frames[SYMBOL]), measure(args.runs, {
        "multibot, in-process": lambda: run_ours((SYMBOL,), isolate=False),
        "multibot, process per symbol": lambda: run_ours((SYMBOL,), isolate=True),
        "multibot engine loop, event-driven": engine_loop(bar_by_bar=False),
        "multibot engine loop, bar by bar": engine_loop(bar_by_bar=True),
        bt_name: lambda: run_bt([frames[SYMBOL]], strategy),
    }))
    if not args.no_multi:
        ok &= report(f"{' '.join(MULTI)} 1m", sum(len(f) for f in frames.values()),
                     measure(max(1, args.runs // 2), {
                         "multibot, process per symbol": lambda: run_ours(MULTI, isolate=True),
                         bt_name: lambda: run_bt(list(frames.values()), strategy),
                     }))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_ours, (SYMBOL,), False)
        print("\nwhere multibot's in-process time goes (cProfile, tottime):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
